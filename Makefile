# warmstart — the two commands that do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := docker-registry skopeo umoci containerd runc openssl iproute2 ca-certificates
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PY := $(VENV)/.py-stamp

.PHONY: demo test lint bench-pull deps clean

demo: deps
	$(VENV)/bin/python -m warmstart.demo

test: deps
	bash scripts/run-tests.sh

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench-pull: deps
	$(VENV)/bin/warmstart bench pull

deps: $(STAMP_APT) $(STAMP_PY)

# Debian packages: installed only when a tool is missing, so a second run does nothing.
$(STAMP_APT):
	@missing=""; for t in docker-registry skopeo umoci containerd runc ctr openssl ip; do \
	  command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PY): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
