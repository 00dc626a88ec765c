from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.serving.spec import EndpointSpec, SpecError, build_spec, load_spec, parse_spec

MINIMAL = 'name = "llm"\nimage = "registry.example/llm/qwen3:8b"\n'


def test_defaults() -> None:
    s = parse_spec(MINIMAL)
    assert s.name == "llm"
    assert s.image == "registry.example/llm/qwen3:8b"
    assert s.reference.registry == "registry.example"
    assert s.reference.repository == "llm/qwen3"
    assert (s.min_replicas, s.max_replicas) == (0, 4)
    assert s.target_concurrency == 1.0
    assert (s.stable_window, s.panic_window, s.panic_threshold) == (60.0, 6.0, 2.0)
    assert s.scale_down_delay == 30.0
    assert s.max_scale_up_step is None and s.max_scale_down_step is None
    assert s.scale_to_zero is False
    assert s.floor == 1  # scale_to_zero off: at least one replica
    assert s.prewarm_headroom == 0.2
    assert s.prewarm_spare is None  # hot on every node the endpoint may scale to
    assert s.port == 8080
    assert s.env == {}
    assert s.replica_start_timeout > 0
    assert s.model is None and s.model_reference is None  # no model mounted


def test_model_is_a_normalised_reference() -> None:
    s = parse_spec(MINIMAL + 'model = "registry.example/llm/qwen3-8b:v1"\n')
    assert s.model == "registry.example/llm/qwen3-8b:v1"
    assert s.model_reference is not None
    assert s.model_reference.repository == "llm/qwen3-8b"
    assert parse_spec(MINIMAL + 'model = " weights "\n').model == (
        "docker.io/library/weights:latest"
    )
    digest = "sha256:" + "a" * 64
    assert parse_spec(MINIMAL + f'model = "r.io/m@{digest}"\n').model == f"r.io/m@{digest}"


def test_full_spec() -> None:
    text = MINIMAL + (
        "min_replicas = 0\nmax_replicas = 8\ntarget_concurrency = 4\nstable_window = 30\n"
        "panic_window = 3\npanic_threshold = 1.5\nscale_down_delay = 10\n"
        "max_scale_up_step = 4\nmax_scale_down_step = 1\nscale_to_zero = true\n"
        "prewarm_headroom = 0.3\nprewarm_spare = 2\nport = 9000\nreplica_start_timeout = 600\n"
        '[env]\nMODEL_ID = "Qwen/Qwen3-8B"\n'
    )
    s = parse_spec(text)
    assert s.prewarm_spare == 2
    assert s.target_concurrency == 4.0
    assert s.floor == 0
    assert (s.max_scale_up_step, s.max_scale_down_step) == (4, 1)
    assert s.env == {"MODEL_ID": "Qwen/Qwen3-8B"}
    assert s.port == 9000


def test_image_is_normalised() -> None:
    assert parse_spec('name = "a"\nimage = "busybox"\n').image == "docker.io/library/busybox:latest"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("", "image"),  # missing
        ('image = "Not A Ref"', "image"),
        ('image = "x"\nmin_replicas = -1', "min_replicas"),
        ('image = "x"\nmax_replicas = 0', "max_replicas"),
        ('image = "x"\nmin_replicas = 3\nmax_replicas = 2', "max_replicas"),
        ('image = "x"\ntarget_concurrency = 0', "target_concurrency"),
        ('image = "x"\nstable_window = 0', "stable_window"),
        ('image = "x"\npanic_window = 90', "panic_window"),
        ('image = "x"\npanic_threshold = 0.5', "panic_threshold"),
        ('image = "x"\nscale_down_delay = -1', "scale_down_delay"),
        ('image = "x"\nmax_scale_up_step = 0', "max_scale_up_step"),
        ('image = "x"\nmax_scale_down_step = 0', "max_scale_down_step"),
        ('image = "x"\nscale_to_zero = "yes"', "scale_to_zero"),
        ('image = "x"\nscale_to_zero = true\nmin_replicas = 2', "scale_to_zero"),
        ('image = "x"\nprewarm_headroom = 1.5', "prewarm_headroom"),
        ('image = "x"\nprewarm_spare = -1', "prewarm_spare"),
        ('image = "x"\nprewarm_spare = true', "prewarm_spare"),
        ('image = "x"\nprewarm_spare = 1.5', "prewarm_spare"),
        ('image = "x"\nport = 0', "port"),
        ('image = "x"\nport = true', "port"),
        ('image = "x"\nport = "8080"', "port"),
        ('image = "x"\nreplica_start_timeout = 0', "replica_start_timeout"),
        ('image = "x"\nenv = { A = 1 }', "env"),
        ('image = "x"\nenv = { "1BAD" = "v" }', "env"),
        ('image = "x"\nreplicas = 3', "replicas"),
        ('image = "x"\nmodel = "Not A Ref"', "model"),
        ('image = "x"\nmodel = ""', "model"),
        ('image = "x"\nmodel = 3', "model"),
        ('image = "x"\nmodel = ["r.io/m:v1"]', "model"),
        ('image = "x"\nmodel = "r.io/m@sha256:abc"', "model"),
    ],
)
def test_bad_field_is_named_in_one_line(extra: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(f'name = "llm"\n{extra}\n', source="llm.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("llm.toml: ")
    assert field in message


@pytest.mark.parametrize("name", ["", "UPPER", "-lead", "trail-", "a b", "x" * 64])
def test_bad_name(name: str) -> None:
    with pytest.raises(SpecError, match="name"):
        build_spec({"name": name, "image": "x"})


def test_not_toml() -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_spec("name = ")


def test_spec_is_frozen() -> None:
    s = parse_spec(MINIMAL)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        s.max_replicas = 3  # type: ignore[misc]
    assert isinstance(s, EndpointSpec)


def test_load_spec(tmp_path: Path) -> None:
    path = tmp_path / "llm.toml"
    path.write_text(MINIMAL + "max_replicas = 6\n")
    assert load_spec(path).max_replicas == 6
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    path.write_text(MINIMAL + "max_replicas = 0\n")
    with pytest.raises(SpecError, match=r"llm\.toml: max_replicas"):
        load_spec(path)


def test_prewarm_spare_zero_turns_spares_off() -> None:
    assert parse_spec(MINIMAL + "prewarm_spare = 0\n").prewarm_spare == 0


def test_module_example_parses() -> None:
    import warmstart.serving.spec as module

    assert module.__doc__ is not None
    example = module.__doc__.split("```toml\n", 1)[1].split("```", 1)[0]
    s = parse_spec(example)
    assert (s.name, s.max_replicas, s.prewarm_spare) == ("qwen3-8b", 8, 2)
    assert s.model == "registry.example/llm/qwen3-8b:v1"
