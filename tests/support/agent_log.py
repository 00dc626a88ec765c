"""Reading a ``warmstart agent`` process's log: tracebacks and ERROR lines.

The agent logs one line per event (``%(asctime)s %(levelname)s %(name)s: %(message)s``); a
traceback is a fault in the agent, never the answer to something a client did. The fixtures of
the hostile-input tests check the whole log with :func:`assert_no_tracebacks` at teardown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def tracebacks(text: str) -> int:
    """How many tracebacks ``text`` holds (chained exceptions count once each)."""
    return text.count(TRACEBACK)


def error_lines(text: str) -> list[str]:
    """The lines logged at ERROR or CRITICAL."""
    return [line for line in text.splitlines() if _ERROR_LINE.match(line)]


def assert_no_tracebacks(path: Path, *, errors: bool = True) -> None:
    """0 tracebacks in the log (and, with ``errors``, no ERROR lines); the log is the message."""
    text = log_text(path)
    count = tracebacks(text)
    assert count == 0, f"{count} traceback(s) in the agent's log {path}:\n{text[-6000:]}"
    if errors:
        found = error_lines(text)
        assert not found, f"ERROR lines in the agent's log {path}:\n" + "\n".join(found[-20:])


def wait_for_lines(
    path: Path, match: Callable[[str], bool], count: int, timeout: float = 10.0
) -> list[str]:
    """The log's lines for which ``match`` holds, once there are ``count`` of them (or at the
    timeout, whatever there is then)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_text(path).splitlines() if match(line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
