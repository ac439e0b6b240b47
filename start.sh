#!/usr/bin/env bash
# Palabre: one-shot install into .venv (idempotent), then serve the page.
#   ./start.sh [serve options]   install if needed, provision the default model, run `webui serve`
#   ./start.sh test [pytest options]   install with the test extras and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

mode=serve
if [ "${1:-}" = "test" ]; then
  mode=test
  shift
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Palabre needs Python 3.11 or newer (found: $("$python_bin" --version 2>&1))." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "Creating the virtual environment in .venv"
  "$python_bin" -m venv .venv
fi

extras="llama-cpp"
[ "$mode" = "test" ] && extras="llama-cpp,test"
# Reinstall only when pyproject.toml or the extras change: a second run starts at once.
stamp=".venv/.palabre-install-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -e "$stamp" ]; then
  say "Installing Palabre [$extras] (the first time, pip compiles llama.cpp: about 5-10 minutes on 2 cores)"
  .venv/bin/python -m pip install --upgrade --quiet pip 2>/dev/null || true
  .venv/bin/python -m pip install --progress-bar on -e ".[$extras]"
  rm -f .venv/.palabre-install-*
  touch "$stamp"
else
  say "Palabre is installed (.venv)"
fi

if [ "$mode" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  say "Installing Chromium for the browser tests (Debian package)"
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing and cannot be installed without root: apt-get install chromium" >&2
    exit 1
  fi
fi

say "Checking the default model"
.venv/bin/python -m webui models provision-default

if [ "$mode" = "test" ]; then
  say "Running the test suite"
  exec .venv/bin/python -m pytest "$@"
fi

say "Starting Palabre: open http://127.0.0.1:7860/ in your browser (Ctrl-C stops)"
exec .venv/bin/python -m webui serve "$@"
