from __future__ import annotations

import email.message
import zipfile
from pathlib import Path

import pytest

from warmstart.image.agent_image import (
    console_scripts,
    environment_pins,
    exclusive_dependencies,
    runtime_requirements,
    write_scripts,
)
from warmstart.image.debs import parse_print_uris
from warmstart.image.tools import BuildError


def wheel(directory: Path, name: str, version: str, requires: list[str], **extra: str) -> Path:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    lines = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")
        for member, text in extra.items():
            zf.writestr(f"{name}-{version}.dist-info/{member}", text)
    return path


def test_print_uris_are_parsed_without_keeping_the_host() -> None:
    text = (
        "'http://mirror.invalid/pool/c/containerd_1.6.20%7eds1_amd64.deb' "
        "containerd_1.6.20~ds1_amd64.deb 25903404 SHA256:8669D264\n"
        "W: something apt says\n"
    )
    [planned] = parse_print_uris(text)
    assert (planned.filename, planned.size, planned.sha256) == (
        "containerd_1.6.20~ds1_amd64.deb",
        25903404,
        "8669d264",
    )
    with pytest.raises(BuildError):
        parse_print_uris("'http://x/y.deb' y.deb 10 MD5Sum:abc\n")


def test_runtime_requirements_leave_the_extras_out() -> None:
    metadata = email.message.Message()
    for line in (
        "aiohttp<4,>=3.9",
        'kopf<2,>=1.37; extra == "operator"',
        'pytest<10,>=8; extra == "dev"',
        "tomli; python_version < '3.11'",
    ):
        metadata["Requires-Dist"] = line
    assert runtime_requirements(metadata) == [
        "aiohttp<4,>=3.9",
        "tomli; python_version < '3.11'",
    ]
    # the operator's extra, asked for: kopf without its marker, the other extras still out
    assert runtime_requirements(metadata, ["operator"]) == [
        "aiohttp<4,>=3.9",
        "kopf<2,>=1.37",
        "tomli; python_version < '3.11'",
    ]


def test_what_only_one_requirement_brings_in(tmp_path: Path) -> None:
    wheels = [
        wheel(tmp_path, "kopf", "1.45", ["aiohttp", "jsonpatch", "click", "pyyaml"]),
        wheel(tmp_path, "jsonpatch", "1.48", ["jsonpointer"]),
        wheel(tmp_path, "jsonpointer", "3.1", []),
        wheel(tmp_path, "aiohttp", "3.14", ["yarl"]),
        wheel(tmp_path, "yarl", "1.2", []),
        wheel(tmp_path, "click", "8.5", []),
        wheel(tmp_path, "pyyaml", "6.0", []),
        wheel(tmp_path, "typer", "0.29", ["click", 'colorama; platform_system == "Windows"']),
    ]
    top = ["aiohttp", "kopf", "pyyaml", "typer"]
    assert exclusive_dependencies(wheels, "kopf", top) == {"kopf", "jsonpatch", "jsonpointer"}
    assert exclusive_dependencies(wheels, "aiohttp", top) == set()  # kopf needs it too
    assert exclusive_dependencies(wheels, "typer", top) == {"typer", "colorama"}


def test_console_scripts_become_small_python3_scripts(tmp_path: Path) -> None:
    entry_points = "[console_scripts]\nwarmstart = warmstart.cli.main:main\n"
    path = wheel(tmp_path, "warmstart", "0.1.0", [], **{"entry_points.txt": entry_points})
    scripts = console_scripts(path)
    assert scripts == {"warmstart": "warmstart.cli.main:main"}
    [script] = write_scripts(scripts, tmp_path / "bin")
    text = script.read_text()
    assert text.startswith("#!/usr/bin/python3\n")
    assert "from warmstart.cli.main import main" in text and "sys.exit(main())" in text
    assert script.stat().st_mode & 0o777 == 0o755
    with pytest.raises(BuildError):
        write_scripts({"bad": "no.function.here"}, tmp_path / "bin")


def test_environment_pins_name_this_environment_without_warmstart() -> None:
    pins = environment_pins()
    names = {p.split("==")[0].lower() for p in pins}
    assert "aiohttp" in names and "warmstart" not in names
    assert all("==" in p for p in pins)
