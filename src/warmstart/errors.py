"""The one error model: every expected failure is a :class:`WarmstartError`.

The error is raised where the fault is known, and carries what a boundary needs to answer it:
the OCI error ``code`` and HTTP ``status`` the agent's HTTP API answers, whether a later
attempt may pass (``retryable``), the one-line ``message`` and, when the cause said so, how
long to wait first (``retry_after``, seconds). Each boundary renders it once: the agent's HTTP
middleware as an OCI error body, the CLI as one line and a non-zero exit. Layers that wrap an
error in their own (a fetch source failure in "every source failed") keep its
``retry_after`` (:func:`retry_after_of`).

This module imports nothing of the project, so every layer can derive from it.
"""

from __future__ import annotations

MAX_MESSAGE = 200


class WarmstartError(Exception):
    """Base of every error a user (or a client of the agent) is meant to see.

    Subclasses set ``code``/``status``/``retryable`` for their case; ``retry_after`` is given
    per error (an upstream's ``Retry-After``) or per class.
    """

    code: str = "UNKNOWN"
    status: int = 500
    retryable: bool = False
    retry_after: float | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after

    @property
    def message(self) -> str:
        """The error as one line (whitespace runs, newlines too, become one space)."""
        return " ".join((str(self) or self.code.lower().replace("_", " ")).split())


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` squeezed onto one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def retry_after_of(*errors: BaseException | None) -> float | None:
    """The longest ``retry_after`` any of ``errors`` carries (None: none says when)."""
    hints = [
        e.retry_after for e in errors if isinstance(e, WarmstartError) and e.retry_after is not None
    ]
    return max(hints) if hints else None


__all__ = ["MAX_MESSAGE", "WarmstartError", "one_line", "retry_after_of"]
