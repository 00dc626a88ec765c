"""Parsing ``POST /invocations`` bodies (pure functions, no I/O)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

INPUT_TOKEN_KEYS = ("input_tokens", "prompt_tokens", "ContextTokens")
OUTPUT_TOKEN_KEYS = ("output_tokens", "max_new_tokens", "max_tokens", "GeneratedTokens")
CHARS_PER_TOKEN = 4  # estimate when a bench request carries text but no token count


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class TokenCounts:
    input_tokens: int
    output_tokens: int


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def parse_texts(body: bytes, *, max_batch: int) -> list[str]:
    """``{"texts": [...]}`` or ``{"inputs": "..." | [...]}`` -> the list of texts."""
    data = _load(body)
    raw = data["texts"] if "texts" in data else data.get("inputs")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise BadRequest('expected {"texts": [str, ...]} or {"inputs": str | [str, ...]}')
    if not raw:
        raise BadRequest("no texts given")
    if len(raw) > max_batch:
        raise BadRequest(f"at most {max_batch} texts a request, got {len(raw)}")
    return raw


def _count(data: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadRequest(f"{key} must be a non-negative integer")
            return value
    return None


def parse_token_counts(body: bytes) -> TokenCounts:
    """Token counts of a bench request.

    ``input_tokens`` (or ``prompt_tokens``, ``ContextTokens`` as in the Azure trace) and
    ``output_tokens`` (or ``max_new_tokens``, ``max_tokens``, ``GeneratedTokens``); without an
    input count, the texts in ``inputs``/``texts`` are counted at 4 characters a token.
    """
    data = _load(body)
    inputs = _count(data, INPUT_TOKEN_KEYS)
    if inputs is None:
        raw = data.get("inputs", data.get("texts", ""))
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadRequest("give input_tokens, or inputs as text")
        inputs = sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts)
    outputs = _count(data, OUTPUT_TOKEN_KEYS)
    return TokenCounts(inputs, outputs or 0)
