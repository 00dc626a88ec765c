"""The image ships only ``warmstart_harness.model_server``: it must import nothing else of the
harness, nothing of warmstart and no third-party package beyond onnxruntime, tokenizers and numpy."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import warmstart_harness.model_server as pkg

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "tokenizers"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_stdlib_and_runtime_deps() -> None:
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "warmstart_harness":
                assert name.startswith("warmstart_harness.model_server"), (path.name, name)
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                    path.name,
                    name,
                )
