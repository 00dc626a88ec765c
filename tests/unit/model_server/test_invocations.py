from __future__ import annotations

import json

import pytest

from warmstart_harness.model_server.invocations import (
    BadRequest,
    TokenCounts,
    parse_texts,
    parse_token_counts,
)


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_texts_and_inputs_forms() -> None:
    assert parse_texts(body({"texts": ["a", "b"]}), max_batch=8) == ["a", "b"]
    assert parse_texts(body({"inputs": "a"}), max_batch=8) == ["a"]
    assert parse_texts(body({"inputs": ["a"]}), max_batch=8) == ["a"]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", body({}), body({"texts": []}), body({"texts": [1]})],
)
def test_bad_text_bodies(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_texts(raw, max_batch=8)


def test_batch_limit() -> None:
    with pytest.raises(BadRequest, match="at most 2"):
        parse_texts(body({"texts": ["a", "b", "c"]}), max_batch=2)


def test_token_counts_by_any_name() -> None:
    assert parse_token_counts(body({"input_tokens": 10, "output_tokens": 5})) == TokenCounts(10, 5)
    assert parse_token_counts(body({"prompt_tokens": 7, "max_tokens": 3})) == TokenCounts(7, 3)
    assert parse_token_counts(body({"ContextTokens": 9, "GeneratedTokens": 2})) == TokenCounts(9, 2)


def test_token_counts_estimated_from_text() -> None:
    assert parse_token_counts(body({"inputs": "x" * 9})) == TokenCounts(3, 0)
    assert parse_token_counts(body({"texts": ["abcd", "ab"], "max_new_tokens": 4})) == TokenCounts(
        2, 4
    )


@pytest.mark.parametrize(
    "obj", [{"input_tokens": -1}, {"input_tokens": "3"}, {"input_tokens": True}, {"inputs": 3}]
)
def test_bad_token_counts(obj: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        parse_token_counts(body(obj))
