"""The kustomizations stay within what kustomize v2.0.3 (kubectl 1.14-1.20, e.g. Debian 12's
kubernetes-client) reads, as well as kustomize v5: CI may render them with either."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.manifests import BASE, MONITORING, OVERLAY

# The Kustomization fields of kustomize v2 (pkg/types/kustomization.go there), minus the ones
# whose meaning changed since (`patches`: a list of paths in v2, of objects from v3 on).
V2_FIELDS = {
    "namePrefix", "nameSuffix", "namespace", "commonLabels", "commonAnnotations",
    "patchesStrategicMerge", "patchesJson6902", "images", "vars", "resources", "crds", "bases",
    "configMapGenerator", "secretGenerator", "generatorOptions", "configurations",
}  # fmt: skip
GENERATOR_FIELDS = {"name", "namespace", "behavior", "type", "literals", "files", "env"}

KUSTOMIZATIONS = [BASE, OVERLAY, MONITORING]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_only_kustomize_v2_fields(directory: Path) -> None:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(k) <= V2_FIELDS, set(k) - V2_FIELDS
    # v2 checks apiVersion against its own short form; leaving it out works in both
    assert "apiVersion" not in k and "kind" not in k
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        assert set(generator) <= GENERATOR_FIELDS, set(generator) - GENERATOR_FIELDS
    for resource in k.get("resources", []):
        assert (directory / resource).is_file(), f"{resource}: v2 takes files only in resources"
    for base in k.get("bases", []):
        assert (directory / base / "kustomization.yaml").is_file(), base


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.name)
def test_every_file_is_used(directory: Path) -> None:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    named = set(k.get("resources", [])) | set(k.get("patchesStrategicMerge", []))
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        named |= {f.split("=", 1)[-1] for f in generator.get("files", [])}
    present = {p.name for p in directory.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert present == named, present ^ named
