# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch build the lock is made with (pip takes the local CPU wheel for this pin here; see README).
TORCH ?= torch==2.13.0
# Extra pip arguments for make install, e.g. a CUDA 12 torch build of the locked version (README):
#   make install PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cu128"
PIP_ARGS ?=
# Resolved by pip but left out of the lock (see README "Install"): jax/jaxlib (and what only they
# need) come with mediapipe and are never imported by what emokit uses; opencv-python (scenedetect)
# and opencv-contrib-python (mediapipe) write the same cv2/ folder as the declared headless build.
UNLOCKED := jax|jaxlib|ml[-_]dtypes|opt[-_]einsum|opencv[-_]python|opencv[-_]contrib[-_]python|emokit[-_]portrait

.PHONY: install demo test test-fast test-kernels lint typecheck lock manifest-example bench clean

# The venv is exactly constraints.txt (no resolver, so nothing outside the lock comes in), plus emokit
# itself, editable. It is rebuilt from scratch when the lock changes.
$(STAMP): constraints.txt
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps $(PIP_ARGS) -r constraints.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m emokit.demo --out demo_out

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not gpu"

# The `crossrun` tests (floats compared across processes, runs or with a file made on another
# machine), rerun with the kernels an AVX2-only CPU (most AMD EPYC) takes, then with generic ones on
# one thread: torch's ATen dispatch, oneDNN, MKL, numpy and OpenCV each told which ISA to stop at.
AVX2_ONLY := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	NPY_DISABLE_CPU_FEATURES=AVX512F,AVX512CD,AVX512_SKX,AVX512_CLX,AVX512_CNL,AVX512_ICL,AVX512_SPR \
	OPENCV_CPU_DISABLE=AVX512F,AVX512-SKX,AVX512-COMMON,AVX512-CLX
GENERIC := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 OMP_NUM_THREADS=1 \
	NPY_DISABLE_CPU_FEATURES=AVX,F16C,FMA3,AVX2,AVX512F,AVX512CD,AVX512_SKX,AVX512_CLX,AVX512_CNL,AVX512_ICL,AVX512_SPR \
	OPENCV_CPU_DISABLE=AVX,FP16,AVX2,FMA3,AVX512F,AVX512-SKX,AVX512-COMMON,AVX512-CLX

test-kernels: $(STAMP)
	$(AVX2_ONLY) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m crossrun
	$(GENERIC) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m crossrun

lint: $(STAMP)
	$(BIN)/ruff check emokit tests benchmarks
	$(BIN)/ruff format --check emokit tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Refresh constraints.txt: resolve pyproject's ranges (all extras) in a throwaway venv, freeze it.
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q "$(TORCH)" "setuptools>=77"
	.lock-venv/bin/pip install -q ".[dev]"
	echo "# The lock (make lock; installed by make install with --no-deps). Left out: see UNLOCKED in Makefile." \
		> constraints.txt.tmp
	.lock-venv/bin/pip freeze --all --exclude-editable \
		| grep -viE '^($(UNLOCKED)|pip|wheel)( @|==)' | sed -E 's/^(torch==[^+]*)\+.*/\1/' \
		>> constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf .lock-venv

manifest-example: $(STAMP)
	$(BIN)/python -m emokit.demo --manifest-example data_manifest.example.parquet

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .lock-venv demo_out .pytest_cache .mypy_cache
