#!/usr/bin/env bash
# Command 2 of the README: set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
tools/install.sh
export PATH="$PWD/venv/bin:$PATH"
venv/bin/ruff check .   # lint first: pyproject.toml says which rules and why
exec venv/bin/python -m pytest -q "$@" tests
