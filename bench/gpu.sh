#!/usr/bin/env bash
# The prepared GPU check (issue 16): one command, no interaction, bounded in time.
#
#   bash bench/gpu.sh OUT_DIR [bench.gpu options]            # a CUDA machine, from a clean checkout
#   bash bench/gpu.sh --dry-run OUT_DIR [bench.gpu options]  # tiny sizes on CPU (tests/test_bench_gpu.py)
#   bash bench/gpu.sh --prepare                              # here, before a loan: fill .gpu/ to carry
#
# The environment is made as `make test` makes it (`make install`: .venv with torch 2.14.1
# and the project). Where that cannot work (no python3.11, or no package index, as on this
# workplace's GPU machines), it falls back to the machine's own python3 when that has torch
# with CUDA, adds the wheels carried in .gpu/wheels (bench/gpu-wheels.txt; `--prepare`
# downloads them) and runs the checkout from PYTHONPATH. LESANET_PYTHON=/path/to/python
# skips both and uses that interpreter as it is.
#
# Figures: OUT_DIR/gpu.json, gpu.md; logs: OUT_DIR/gpu-log.txt, gpu-env.log.
# Time: environment <= LESANET_ENV_TIMEOUT (default 300 s), measurements <= --budget
# (default 330 s; each has its own bound too, bench/gpu.py PROFILES).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[gpu.sh] $*" >&2; }

if [ "${1:-}" = "--prepare" ]; then
    # On a machine with a package index: wheels the GPU machine's python3 lacks, and the
    # official label JSON when it is beside the checkout. .gpu/ is git-ignored; carry it.
    mkdir -p .gpu/wheels
    grep -v '^\s*#' bench/gpu-wheels.txt | grep . | while read -r spec; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels "$spec"
    done
    labels=../shared/data/lesanet/text_mined_labels_171_and_split.json
    if [ -f "$labels" ]; then cp "$labels" .gpu/; fi
    du -sh .gpu >&2
    ls .gpu .gpu/wheels >&2
    exit 0
fi

mode=()
if [ "${1:-}" = "--dry-run" ]; then mode=(--dry-run); shift; fi
OUT="${1:?usage: bash bench/gpu.sh [--dry-run] OUT_DIR [bench.gpu options] | --prepare}"
shift
mkdir -p "$OUT"
envlog="$OUT/gpu-env.log"
: >"$envlog"

works() {  # the interpreter runs torch and imports every room the check uses
    "$1" -c 'import torch, torchvision, cli, ontology, vision.engines.train, vision.engines.infer, vision.engines.retrieval' >>"$envlog" 2>&1
}

if [ -n "${LESANET_PYTHON:-}" ]; then
    PY="$LESANET_PYTHON"
    export LESANET_GPU_ENV="given interpreter ($PY)"
elif say "make install (log: $envlog)" && \
     PIP_DEFAULT_TIMEOUT=20 PIP_RETRIES=1 timeout "${LESANET_ENV_TIMEOUT:-300}" make install >>"$envlog" 2>&1 && \
     works .venv/bin/python; then
    PY=.venv/bin/python
    export LESANET_GPU_ENV="make install (.venv)"
else
    say "make install gave no working .venv (see $envlog); using the machine's python3"
    PY=python3
    site=/tmp/lesanet-site
    if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .gpu/wheels/*.whl >>"$envlog" 2>&1
    fi
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export LESANET_GPU_ENV="the machine's python3 ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo '?')) + .gpu/wheels, PYTHONPATH"
fi
if ! works "$PY"; then
    say "error: $PY cannot import torch and the project (last lines of $envlog below); on a machine without a" \
        "package index, run 'bash bench/gpu.sh --prepare' where there is one and carry .gpu/"
    tail -5 "$envlog" >&2
    exit 1
fi
say "environment: $LESANET_GPU_ENV"
exec "$PY" -m bench.gpu --out "$OUT" "${mode[@]}" "$@"
