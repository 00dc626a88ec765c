"""The one rule for file names inside a model artifact (pure): what a push writes and what a
node materialises pass the same check."""

from __future__ import annotations

from warmstart.oci.errors import InvalidModel

MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255


def safe_relative_path(name: str, what: str = "file name") -> str:
    """``name`` as a clean relative path (``./a//b`` -> ``a/b``), or :class:`InvalidModel`.

    Refused: empty names, absolute paths, ``..`` anywhere, backslashes (a Windows path that
    would mean something else on another tool), NUL and control characters, over-long names.
    """
    shown = repr(name[:80])
    if not isinstance(name, str) or not name:
        raise InvalidModel(f"{what} is empty")
    if len(name) > MAX_PATH_CHARS:
        raise InvalidModel(f"{what} {shown}... is longer than {MAX_PATH_CHARS} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidModel(f"{what} {shown} contains control characters")
    if "\\" in name:
        raise InvalidModel(f"{what} {shown} contains a backslash")
    if name.startswith("/"):
        raise InvalidModel(f"{what} {shown} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidModel(f"{what} {shown} leaves the model directory ('..')")
    if not parts:
        raise InvalidModel(f"{what} {shown} names no file")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise InvalidModel(f"{what} {shown} has a component over {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


__all__ = ["MAX_NAME_BYTES", "MAX_PATH_CHARS", "safe_relative_path"]
