#!/usr/bin/env bash
# Set up a fresh machine: Debian packages (ffmpeg, TTS engines) where missing, then a
# virtual environment in .venv with the project installed. Safe to run again: it skips
# what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r package; do
  case "$package" in ''|'#'*) continue ;; esac
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done < scripts/apt-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.archive-search-installed
wanted=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing the project into .venv (the first time downloads torch, several GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,train,web,postgres,ray]'
  echo "$wanted" > "$stamp"
fi
# Google's speech embedding (ParallelKWS front-end) ships only inside openwakeword 0.5.1's
# wheel; --no-deps: the engine runs its ONNX files with onnxruntime, not tflite-runtime.
if [ ! -f "$(.venv/bin/python -c 'import importlib.util as u; s = u.find_spec("openwakeword"); print(s.submodule_search_locations[0] if s else "/nonexistent")')/resources/models/embedding_model.onnx" ]; then
  echo "setup: installing openwakeword 0.5.1 (speech embedding model files, no dependencies)"
  .venv/bin/python -m pip install -q --no-deps openwakeword==0.5.1
fi
