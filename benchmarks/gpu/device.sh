#!/usr/bin/env bash
# The one device call of benchmarks/gpu/bench_gpu.py (run from the repository root, with .whl/ and
# .bench/ from benchmarks/gpu/prepare.py carried): the carried wheels, then emokit from this tree,
# both with --no-deps into /tmp/site (torch 2.11 + CUDA and the rest come with the device image),
# then the benchmark, its log and JSON into $OUT.
set -uo pipefail
OUT=${OUT:?set OUT to the folder the figures go to}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site  # setuptools 84 from the wheels builds emokit (the image's may be < 77)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target /tmp/site . || exit
python3 -c "import emokit.train, emokit.generate, sys; print('emokit from', sys.modules['emokit'].__file__)" \
    || exit
PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 benchmarks/gpu/bench_gpu.py --media .bench --out "$OUT" "$@" \
    2>&1 | tee "$OUT/bench_gpu.log"
