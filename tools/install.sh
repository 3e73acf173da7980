#!/usr/bin/env bash
# Creates ./venv with the pinned toolchain and kaldi-avg installed in development mode.
# Idempotent: re-running only reinstalls when requirements.txt or setup.py changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "install.sh: $py lacks venv/ensurepip; installing python3-venv with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if ! command -v sox >/dev/null; then
  # Only egs/fsdd's speed perturbation needs it, so a failure here is a warning.
  echo "install.sh: installing sox (speed perturbation in egs/fsdd/s5) with apt-get" >&2
  { apt-get update -qq && apt-get install -y -qq sox; } ||
    echo "install.sh: WARNING: could not install sox; run egs/fsdd/s5 with --speed-perturb false" >&2
fi
[ -x venv/bin/python ] || "$py" -m venv venv
stamp=venv/.kaldi-avg-installed
want=$(cat requirements.txt setup.py | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
