from __future__ import annotations

from pathlib import Path

from warmstart_harness.example_image.model import MODEL_FILES, write_padding


def test_padding_is_split_into_files_and_incompressible(tmp_path: Path) -> None:
    import zlib

    count = write_padding(tmp_path, 2500, file_size=1000, chunk=300)
    files = sorted(tmp_path.iterdir())
    assert count == 3
    assert [f.name for f in files] == ["padding-000.bin", "padding-001.bin", "padding-002.bin"]
    assert [f.stat().st_size for f in files] == [1000, 1000, 500]
    data = files[0].read_bytes()
    assert len(zlib.compress(data, 9)) > 0.95 * len(data)


def test_zero_padding_writes_nothing(tmp_path: Path) -> None:
    assert write_padding(tmp_path / "p", 0) == 0


def test_model_files_are_the_onnx_model_and_its_tokenizer() -> None:
    assert {f.name for f in MODEL_FILES} == {"model.onnx", "tokenizer.json"}
