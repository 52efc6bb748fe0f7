#!/usr/bin/env bash
# Install everything the tests need (system packages included) and run lint, types and tests.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
printf '\n== ruff\n'
.venv/bin/ruff check edge trainer tests scripts
.venv/bin/ruff format --check edge trainer tests scripts
printf '\n== mypy\n'
.venv/bin/mypy
printf '\n== pytest\n'
.venv/bin/pytest "$@"
