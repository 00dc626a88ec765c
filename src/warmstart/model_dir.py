"""A local model directory as the list of files a model artifact is made of.

Regular files anywhere below the directory, each under its path relative to it ('/'-separated);
empty directories add nothing. Entries whose name starts with a dot (``.git``,
``.gitattributes``, ``.cache``) are left out and reported. A symbolic link to a file is
followed wherever the file is (its bytes are read under the link's path, as ``cp -L`` would:
a Hugging Face cache's ``snapshots/<rev>/`` links every file to ``../../blobs/``); a link to a
directory is followed only inside the directory; a link that dangles or loops is refused.
Anything that is not a regular file or directory (a FIFO, a socket, a device) is refused.
Every refusal is a :class:`ModelDirError` with a one-line message.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.errors import WarmstartError
from warmstart.oci.modelpack import check_path


class ModelDirError(WarmstartError):
    """The directory cannot become a model artifact (missing, empty, a bad entry)."""

    status = 400
    code = "INVALID_REQUEST"


@dataclass(frozen=True)
class LocalFile:
    """A file of the model: ``path`` in the artifact, ``source`` the file to read."""

    path: str  # relative to the model directory, '/'-separated
    source: Path  # where the bytes are (a link's target, resolved)
    size: int


@dataclass
class ModelDir:
    root: Path
    name: str = ""  # the directory's own name (links resolved): the model's default name
    files: list[LocalFile] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # paths left out: a dot in front

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def _name(raw: str, parent: str, where: Path) -> str:
    """An entry's name checked: valid UTF-8 (it goes into JSON), no control characters."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelDirError(f"{where}: file name is not valid UTF-8") from None
    path = f"{parent}/{raw}" if parent else raw
    try:
        check_path(path)
    except ValueError:
        raise ModelDirError(f"{where}: file name has control characters") from None
    return path


def _cannot_read(where: Path, error: OSError) -> str:
    return f"cannot read {where}: {error.strerror or error}"


def _stat(path: Path, where: Path, *, missing: str) -> os.stat_result:
    """``path``'s status, links followed; the error (about ``where``) says ``missing`` when
    there is nothing there."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise ModelDirError(missing) from None
    except OSError as e:
        raise ModelDirError(_cannot_read(where, e)) from None


def scan_model_dir(root: Path) -> ModelDir:
    """The files of the model in ``root``, sorted by path (see the module's rules)."""
    st = _stat(root, root, missing=f"{root} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise ModelDirError(f"{root} is not a directory")
    real_root = Path(os.path.realpath(root))
    out = ModelDir(root, real_root.name)
    _walk(root, "", real_root, (real_root,), out)
    if not out.files:
        hidden = f" (left out: {', '.join(out.hidden[:5])})" if out.hidden else ""
        raise ModelDirError(f"{root} has no files to push{hidden}")
    out.files.sort(key=lambda f: f.path)
    return out


def _inside(target: Path, real_root: Path) -> bool:
    return target == real_root or target.is_relative_to(real_root)


def _walk(
    directory: Path, prefix: str, real_root: Path, chain: tuple[Path, ...], out: ModelDir
) -> None:
    """Add the files below ``directory`` (its path in the model: ``prefix``). ``chain`` holds
    the real paths of the directories being walked, to notice a link back to one of them."""
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise ModelDirError(_cannot_read(directory, e)) from None
    for entry in entries:
        where = Path(entry.path)
        if entry.name.startswith("."):
            out.hidden.append(f"{prefix}/{entry.name}" if prefix else entry.name)
            continue
        path = _name(entry.name, prefix, where)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as e:
            raise ModelDirError(_cannot_read(where, e)) from None
        source = where
        if stat.S_ISLNK(st.st_mode):
            target = Path(os.path.realpath(where))
            st = _stat(target, where, missing=f"{where} is a dangling symbolic link")
            if stat.S_ISDIR(st.st_mode) and not _inside(target, real_root):
                raise ModelDirError(
                    f"{where} is a symbolic link to the directory {target}, outside "
                    f"{out.root}; push that directory, or copy it in"
                )
            source = target
        if stat.S_ISDIR(st.st_mode):
            real = Path(os.path.realpath(source))
            if real in chain:
                raise ModelDirError(f"{where} is a symbolic link loop (back to {real})")
            _walk(source, path, real_root, (*chain, real), out)
        elif stat.S_ISREG(st.st_mode):
            out.files.append(LocalFile(path, source, st.st_size))
        else:
            raise ModelDirError(
                f"{where} is not a regular file or directory ({_kind(st.st_mode)}); "
                "a model holds only files"
            )


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


__all__ = ["LocalFile", "ModelDir", "ModelDirError", "scan_model_dir"]
