"""One line for a pydantic ``ValidationError`` of a configuration document."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


def describe_invalid(error: ValidationError, source: str, messages: Mapping[str, str]) -> str:
    """``"<source>: <field.path>: <message> (and N more problems)"`` for the first error;
    ``messages`` replaces pydantic's message for some error types (e.g. ``extra_forbidden``)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    message = messages.get(str(first.get("type")), message)
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    text = f"{source}: {where}: {message}{tail}" if where else f"{source}: {message}{tail}"
    return " ".join(text.split())


__all__ = ["describe_invalid"]
