"""The peer token read from a file (a mounted Kubernetes Secret, a file ``echo`` wrote).

One reader for the agent's ``peer_token_file``, ``warmstart serve --peer-token-file`` and
``warmstart operator --peer-token-file``: the content without surrounding whitespace, one
word of printable UTF-8, at most :data:`MAX_TOKEN_BYTES`. The token never appears in an error.
"""

from __future__ import annotations

from pathlib import Path

MAX_TOKEN_BYTES = 4096


class TokenFileError(ValueError):
    """A peer token file that cannot be used; the message is one line."""


def read_token_file(path: Path) -> str:
    """The peer token in ``path``; TokenFileError says what is wrong with the file."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise TokenFileError(f"cannot read the peer token file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(f"the peer token file {path} is over {MAX_TOKEN_BYTES} bytes")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"the peer token file {path} is not UTF-8 text") from None
    if not token:
        raise TokenFileError(f"the peer token file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise TokenFileError(
            f"the peer token in {path} has spaces or control characters (one line expected)"
        )
    return token
