"""The image deploy/kubernetes runs (the agent's DaemonSet and the operator), built without
Docker: the example image's Debian base, Debian's ``ctr`` and CA bundle, cp311 wheels of
warmstart's runtime dependencies, and warmstart's own wheel, assembled with umoci.

Layers, bottom up (each a ``umoci insert``):

1. ``base``: ``debootstrap --variant=minbase --include=python3`` (the example image's, cached:
   both images share it);
2. ``debian``: ``/usr/bin/ctr`` out of the ``containerd`` package (the agent's hot pre-warm runs
   it against the node's socket) and ``/etc/ssl/certs/ca-certificates.crt`` built from the
   ``ca-certificates`` package (upstream registries over HTTPS), with their copyright files;
3. ``deps``: the wheels of warmstart's runtime requirements and everything they need (not the
   ``bench`` and ``dev`` extras), resolved by pip for CPython 3.11 on manylinux x86_64 and
   pinned to the versions of the environment that builds it (what its tests ran);
4. ``warmstart``: the wheel built from the source tree and ``/usr/local/bin/warmstart``.

No pip runs in the image: wheels are unpacked into ``dist-packages``, as for the example image.
The ``.deb`` files and the wheels are cached under ``cache`` (``debs/``, ``agent-wheels/``); a
build whose cache holds them contacts no package registry except for ``apt-get download
--print-uris`` (apt's local lists) and, when a pinned wheel is missing, pip's index.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import warmstart
from warmstart.image.base import base_rootfs
from warmstart.image.debs import DebFile, download_debs, extract_members
from warmstart.image.layers import LayerInfo, normalize_mtimes, tree_size
from warmstart.image.mirror import find_debian_mirror
from warmstart.image.push import push_layout
from warmstart.image.tools import BuildError, run
from warmstart.image.umoci import Manifest, Umoci
from warmstart.image.wheels import IMAGE_PYTHON, SITE_PACKAGES, dist_name, unpack_wheels

Log = Callable[[str], None]

REPOSITORY = "warmstart"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    # Debian's OpenSSL looks in /usr/lib/ssl, which only the openssl package (not in the
    # base) provides: point Python at the bundle; Go's ctr reads this path by itself.
    f"SSL_CERT_FILE={CA_BUNDLE}",
)
# Kubernetes' `command:` replaces both; `docker run IMAGE` / `ctr run IMAGE ID` print the help.
IMAGE_CMD = ("warmstart", "--help")
DEBIAN_PACKAGES = ("containerd", "ca-certificates")
# bookworm's glibc is 2.36: any manylinux wheel up to that runs on it.
AGENT_PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_36_x86_64",
)
# `extra == "operator"`, as pip writes an extra's marker into Requires-Dist
EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([A-Za-z0-9._-]+)["']""")
SCRIPT = """#!/usr/bin/python3
import sys

from {module} import {attr}

sys.exit({attr}())
"""


@dataclass(frozen=True)
class AgentImageOptions:
    cache: Path
    layout: Path
    tag: str | None = None  # default: warmstart's version
    source: Path | None = None  # the source tree (pyproject.toml); default: this package's
    suite: str = "bookworm"
    mirror: str | None = None  # default: from this machine's apt sources
    push: str | None = None  # REGISTRY/NAME:TAG to push to with skopeo
    insecure: bool = False  # push over plain HTTP / without TLS verification
    pin_to_environment: bool = True  # dependency versions = this environment's
    # warmstart's extras the image installs: the operator's (kopf) by default, since
    # deploy/kubernetes runs the agent and the operator from one image; () for an image that
    # runs only the agent (no kopf)
    extras: tuple[str, ...] = ("operator",)


@dataclass(frozen=True)
class PackageSize:
    """One Python distribution in the image, unpacked."""

    name: str
    version: str
    files: int
    bytes: int


@dataclass
class AgentImageResult:
    layout: Path
    tag: str
    manifest: Manifest
    layers: list[LayerInfo]
    packages: list[PackageSize]
    debs: list[DebFile]
    version: str
    revision: str | None
    reference: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    # each runtime requirement of warmstart -> the distributions only it brings in (itself too)
    exclusive: dict[str, set[str]] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        """Compressed bytes of the layers (what a cold pull transfers, with the config)."""
        return sum(layer.size for layer in self.layers)

    @property
    def total_unpacked(self) -> int:
        return sum(layer.unpacked for layer in self.layers)

    def share(self, names: Iterable[str]) -> tuple[int, float]:
        """Unpacked bytes of the named distributions and their share of the whole image."""
        wanted = {dist_name(n) for n in names}
        size = sum(p.bytes for p in self.packages if dist_name(p.name) in wanted)
        return size, size / max(self.total_unpacked, 1)

    @property
    def oci_reference(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    def push_command(self, destination: str = "REGISTRY/warmstart") -> str:
        return (
            f"skopeo copy --preserve-digests {self.oci_reference} docker://{destination}:{self.tag}"
        )


# -- the source and its wheel ---------------------------------------------------------------


def source_tree() -> Path:
    """The source tree of the running warmstart (``src/warmstart`` two levels below it)."""
    root = Path(warmstart.__file__).resolve().parent.parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BuildError(
            f"no pyproject.toml at {root}: warmstart is not running from its source tree; "
            "pass --source DIR"
        )
    return root


def git_revision(source: Path) -> str | None:
    """``HEAD``'s commit (``+dirty`` when tracked files differ), or None outside git."""
    git = shutil.which("git")
    if git is None:
        return None
    head = subprocess.run(
        [git, "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        return None
    dirty = subprocess.run(
        [git, "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def build_wheel(source: Path, work: Path) -> Path:
    """warmstart's wheel, built from a copy of ``source`` (setuptools writes ``build/`` and
    ``*.egg-info`` where it builds: never into the source tree)."""
    copy = work / "source"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (source / name).is_file():
            shutil.copy2(source / name, copy / name)
    shutil.copytree(
        source / "src",
        copy / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    out = work / "wheel"
    argv: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
    argv += ["--disable-pip-version-check", "-w", out]
    if importlib.util.find_spec("setuptools") is not None:
        argv.append("--no-build-isolation")  # no download of the build backend
    run([*argv, copy], what="pip wheel (warmstart)")
    wheels = sorted(out.glob("warmstart-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"pip wheel left {len(wheels)} warmstart wheels in {out}")
    return wheels[0]


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


def runtime_requirements(metadata: email.message.Message, extras: Iterable[str] = ()) -> list[str]:
    """``Requires-Dist`` without the extras' (``; extra == "operator"``) but those of
    ``extras`` (without their marker: the image installs them)."""
    wanted = set(extras)
    out = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            extra = EXTRA_MARKER.fullmatch(marker.strip())
            if extra is not None and extra.group(1) in wanted:
                out.append(requirement.strip())
            continue
        out.append(line.strip() if marker.strip() else requirement.strip())
    return out


def requirement_names(metadata: email.message.Message, extras: Iterable[str] = ()) -> set[str]:
    return {dist_name(r) for r in runtime_requirements(metadata, extras)}


def environment_pins(exclude: Iterable[str] = ("warmstart",)) -> list[str]:
    """``name==version`` for every distribution of this environment (pip ignores the
    constraints of packages nothing requires)."""
    skip = {dist_name(n) for n in exclude}
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and dist_name(name) not in skip:
            pins[dist_name(name)] = f"{name}=={dist.version}"
    return sorted(pins.values())


def _pip_download_argv(
    requirements: Sequence[str], dest: Path, constraints: Path | None
) -> list[str | Path]:
    argv: list[str | Path] = [sys.executable, "-m", "pip", "download", "-q"]
    argv += ["--disable-pip-version-check", "--only-binary=:all:", "-d", dest]
    argv += ["--python-version", IMAGE_PYTHON, "--implementation", "cp", "--abi", "cp311"]
    argv += ["--abi", "abi3", "--abi", "none"]
    for platform in AGENT_PLATFORMS:
        argv += ["--platform", platform]
    if constraints is not None:
        argv += ["-c", constraints]
    return [*argv, *requirements]


def download_dependencies(
    requirements: Sequence[str], cache: Path, work: Path, pins: Sequence[str]
) -> tuple[list[Path], bool]:
    """Every wheel ``requirements`` need, resolved by pip for the image's Python; from
    ``cache`` alone when it holds them (then True), else from pip's index too (new wheels
    are added to ``cache``). Returns the resolved wheels (copies in ``work``)."""
    cache.mkdir(parents=True, exist_ok=True)
    constraints = None
    if pins:
        constraints = work / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
    dest = work / "dependencies"
    base = _pip_download_argv(requirements, dest, constraints)
    try:
        run([*base, "--no-index", "--find-links", cache], what="pip download (from the cache)")
        return sorted(dest.glob("*.whl")), True
    except BuildError:
        shutil.rmtree(dest, ignore_errors=True)
    run([*base, "--find-links", cache], what=f"pip download {' '.join(requirements)}")
    wheels = sorted(dest.glob("*.whl"))
    for wheel in wheels:
        if not (cache / wheel.name).exists():
            shutil.copy2(wheel, cache / wheel.name)
    return wheels, False


def console_scripts(wheel: Path) -> dict[str, str]:
    """``[console_scripts]`` of the wheel's ``entry_points.txt``: {script: module:attr}."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        if not names:
            return {}
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(names[0]).decode())
    return dict(parser["console_scripts"]) if parser.has_section("console_scripts") else {}


def write_scripts(scripts: dict[str, str], bin_dir: Path) -> list[Path]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, target in sorted(scripts.items()):
        module, _, attr = target.strip().partition(":")
        if not module or not attr or not attr.isidentifier():
            raise BuildError(f"console script {name} = {target!r} is not module:function")
        path = bin_dir / name
        path.write_text(SCRIPT.format(module=module, attr=attr))
        path.chmod(0o755)
        out.append(path)
    return out


def _wheel_project(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return name, version


def stage_wheels(wheels: Sequence[Path], site: Path) -> list[PackageSize]:
    """Unpack each wheel into ``site``; the size of each distribution."""
    sizes = []
    for wheel in wheels:
        stats = unpack_wheels([wheel], site)
        name, version = _wheel_project(wheel)
        sizes.append(PackageSize(name, version, stats.files, stats.bytes))
    return sizes


# -- Debian files ----------------------------------------------------------------------------


def stage_debian_files(debs: Sequence[DebFile], dest: Path) -> list[str]:
    """``usr/bin/ctr`` and the CA bundle (every ``mozilla/*.crt``, sorted, concatenated, as
    ``update-ca-certificates`` would), with each package's copyright."""
    by_name = {d.package: d for d in debs}
    notes = []
    containerd = by_name["containerd"]
    got = extract_members(
        containerd.path,
        lambda m: m if m in ("usr/bin/ctr", "usr/share/doc/containerd/copyright") else None,
        dest,
    )
    if "usr/bin/ctr" not in got:
        raise BuildError(f"{containerd.path.name} holds no usr/bin/ctr")
    notes.append(f"ctr from containerd {containerd.version}")
    ca = by_name["ca-certificates"]
    certs = dest.parent / "ca-certificates"
    got = extract_members(
        ca.path,
        lambda m: (
            m
            if (m.startswith("usr/share/ca-certificates/") and m.endswith(".crt"))
            or m == "usr/share/doc/ca-certificates/copyright"
            else None
        ),
        certs,
    )
    pems = sorted(p for m, p in got.items() if m.endswith(".crt"))
    if not pems:
        raise BuildError(f"{ca.path.name} holds no certificates")
    bundle = dest / CA_BUNDLE.lstrip("/")
    bundle.parent.mkdir(parents=True, exist_ok=True)
    with open(bundle, "wb") as out:
        for pem in pems:
            text = pem.read_bytes()
            out.write(text if text.endswith(b"\n") else text + b"\n")
    bundle.chmod(0o644)
    copyright_src = certs / "usr/share/doc/ca-certificates/copyright"
    if copyright_src.is_file():
        target = dest / "usr/share/doc/ca-certificates/copyright"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copyright_src, target)
    notes.append(f"{len(pems)} CA certificates from ca-certificates {ca.version}")
    return notes


def _dirs_0755(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


# -- the build -------------------------------------------------------------------------------


def build_agent_image(options: AgentImageOptions, log: Log = print) -> AgentImageResult:
    timings: dict[str, float] = {}
    hits: dict[str, bool] = {}
    cache = options.cache
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f"agent-work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    def step(name: str, start: float) -> None:
        timings[name] = time.monotonic() - start

    try:
        t = time.monotonic()
        mirror = options.mirror or find_debian_mirror(options.suite)
        hits["base"] = (cache / f"rootfs-{options.suite}-minbase-python3/usr/bin/python3").exists()
        rootfs = base_rootfs(cache, mirror, suite=options.suite, log=log)
        step("base", t)

        t = time.monotonic()
        debs = download_debs(DEBIAN_PACKAGES, cache / "debs")
        debian = work / "debian"
        for note in stage_debian_files(debs, debian):
            log(f"debian: {note}")
        step("debian", t)

        t = time.monotonic()
        source = options.source or source_tree()
        revision = git_revision(source)
        wheel = build_wheel(source, work)
        metadata = wheel_metadata(wheel)
        version = str(metadata["Version"])
        tag = options.tag or version
        log(f"warmstart: {wheel.name} from {source}" + (f" ({revision})" if revision else ""))
        step("wheel", t)

        t = time.monotonic()
        pins = environment_pins() if options.pin_to_environment else []
        wheels, cached = download_dependencies(
            runtime_requirements(metadata, options.extras), cache / "agent-wheels", work, pins
        )
        hits["wheels"] = cached
        deps_site = work / "deps" / SITE_PACKAGES
        packages = stage_wheels(wheels, deps_site)
        log(
            f"deps: {len(wheels)} wheels ({'cached' if cached else 'downloaded'}): "
            + ", ".join(f"{p.name} {p.version}" for p in packages)
        )
        app = work / "app"
        own = stage_wheels([wheel], app / SITE_PACKAGES)
        scripts = write_scripts(console_scripts(wheel), app / "usr/local/bin")
        if not any(s.name == "warmstart" for s in scripts):
            raise BuildError(f"{wheel.name} declares no `warmstart` console script")
        packages += own
        top = sorted(requirement_names(metadata, options.extras))
        exclusive = {name: exclusive_dependencies(wheels, name, top) for name in top}
        step("deps", t)

        t = time.monotonic()
        shutil.rmtree(options.layout, ignore_errors=True)
        options.layout.parent.mkdir(parents=True, exist_ok=True)
        umoci = Umoci(options.layout, tag)
        umoci.init()
        deb_versions = ", ".join(f"{d.package} {d.version}" for d in debs)
        plan: list[tuple[str, str, Path, str]] = [
            ("base", f"debian {options.suite} minbase + python3", rootfs, "/"),
            ("debian", f"ctr + CA bundle ({deb_versions})", debian, "/"),
            ("deps", f"{len(wheels)} wheels: warmstart's runtime requirements", work / "deps", "/"),
            ("warmstart", f"warmstart {version} + /usr/local/bin/warmstart", app, "/"),
        ]
        layers_unpacked = []
        for name, content, tree, target in plan:
            s = time.monotonic()
            if name != "base":
                _dirs_0755(tree)
                normalize_mtimes(tree)
            umoci.insert(tree, target, comment=f"warmstart image: {name} ({content})")
            layers_unpacked.append(tree_size(tree))
            log(
                f"layer {name}: {layers_unpacked[-1] / 1e6:.1f} MB unpacked, "
                f"inserted in {time.monotonic() - s:.1f} s"
            )
        labels = [
            "org.opencontainers.image.title=warmstart",
            f"org.opencontainers.image.version={version}",
            "org.opencontainers.image.description=warmstart agent and operator (deploy/kubernetes)",
        ]
        if revision:
            labels.append(f"org.opencontainers.image.revision={revision}")
        umoci.configure(env=IMAGE_ENV, cmd=IMAGE_CMD, ports=("5050/tcp",), labels=labels)
        manifest = umoci.manifest()
        step("assemble", t)
        layers = [
            LayerInfo(name, content, blob.digest, blob.size, unpacked)
            for (name, content, _, _), blob, unpacked in zip(
                plan, manifest.layers, layers_unpacked, strict=True
            )
        ]
        result = AgentImageResult(
            options.layout, tag, manifest, layers, packages, debs, version, revision,
            timings=timings, cache_hits=hits, exclusive=exclusive,
        )  # fmt: skip
        if options.push:
            t = time.monotonic()
            log(f"push: {options.push}")
            push_layout(options.layout, tag, options.push, tls_verify=not options.insecure)
            result.reference = options.push
            step("push", t)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def exclusive_dependencies(wheels: Sequence[Path], top: str, others: Iterable[str]) -> set[str]:
    """Distributions among ``wheels`` that only ``top`` needs (with ``top``): what leaving
    ``top`` out would remove. Markers other than extras count as needed."""
    requires: dict[str, set[str]] = {}
    for wheel in wheels:
        name, _ = _wheel_project(wheel)
        requires[dist_name(name)] = requirement_names(wheel_metadata(wheel))

    def closure(roots: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = [dist_name(r) for r in roots]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(requires.get(name, ()))
        return seen

    return closure([top]) - closure(dist_name(o) for o in others if dist_name(o) != top)
