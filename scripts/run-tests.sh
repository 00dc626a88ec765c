#!/usr/bin/env bash
# Runs the whole suite: ruff, the type checker (mypy, configured in pyproject.toml's
# [tool.mypy] over src/warmstart and harness/src/warmstart_harness), then pytest. pytest's exit
# code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src harness/src tests || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
