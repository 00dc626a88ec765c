"""A thin wrapper over ``umoci`` (init / new / insert / config) and reading the result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.image.tools import BuildError, find_tool, run

REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Manifest:
    digest: str
    size: int
    config_digest: str
    layers: tuple[LayerBlob, ...]


@dataclass(frozen=True)
class Umoci:
    layout: Path
    tag: str
    binary: str = ""

    @property
    def image(self) -> str:
        return f"{self.layout}:{self.tag}"

    def _run(self, *args: str | Path) -> str:
        return run([self.binary or find_tool("umoci"), *args], what=f"umoci {args[0]}")

    def init(self) -> None:
        """A new empty layout with an empty image ``tag``."""
        self._run("init", "--layout", self.layout)
        self._run("new", "--image", self.image)

    def insert(self, source: Path, target: str, *, comment: str) -> None:
        """One new layer holding ``source`` at ``target``."""
        self._run("insert", "--history.created_by", comment, "--image", self.image, source, target)

    def configure(
        self,
        *,
        entrypoint: Sequence[str] = (),
        env: Sequence[str],
        cmd: Sequence[str] = (),
        ports: Sequence[str] = (),
        labels: Sequence[str] = (),
        workdir: str = "/",
    ) -> None:
        """Set the image config; an empty ``entrypoint`` or ``cmd`` leaves it unset."""
        args: list[str | Path] = ["config", "--image", self.image, "--config.workingdir", workdir]
        # --config.entrypoint and --config.cmd take one element per flag and replace the list.
        for part in entrypoint:
            args += ["--config.entrypoint", part]
        for part in cmd:
            args += ["--config.cmd", part]
        for item in env:
            args += ["--config.env", item]
        for port in ports:
            args += ["--config.exposedports", port]
        for label in labels:
            args += ["--config.label", label]
        args += ["--history.created_by", "warmstart image: config"]
        self._run(*args)

    def manifest(self) -> Manifest:
        index = json.loads((self.layout / "index.json").read_text())
        for entry in index.get("manifests", []):
            if entry.get("annotations", {}).get(REF_NAME) == self.tag:
                data = self._blob(entry["digest"])
                layers = tuple(
                    LayerBlob(layer["digest"], int(layer["size"]), layer["mediaType"])
                    for layer in data.get("layers", [])
                )
                return Manifest(
                    entry["digest"], int(entry["size"]), data["config"]["digest"], layers
                )
        raise BuildError(f"tag {self.tag} not in {self.layout}/index.json")

    def config(self) -> dict[str, Any]:
        return self._blob(self.manifest().config_digest)

    def _blob(self, digest: str) -> dict[str, Any]:
        algorithm, _, hex_ = digest.partition(":")
        result: dict[str, Any] = json.loads((self.layout / "blobs" / algorithm / hex_).read_bytes())
        return result
