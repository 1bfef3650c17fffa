#!/usr/bin/env bash
# Set up, then build a small demo archive with TTS, index it and search it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m archive_search.demo "$@"
