# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch build the lock is made with (pip takes the local CPU wheel for this pin here; see README).
TORCH ?= torch==2.13.0
# Resolved by pip but left out of the lock (see README "Install"): jax/jaxlib (and what only they
# need) come with mediapipe and are never imported by what emokit uses; opencv-python (scenedetect)
# and opencv-contrib-python (mediapipe) write the same cv2/ folder as the declared headless build.
UNLOCKED := jax|jaxlib|ml[-_]dtypes|opt[-_]einsum|opencv[-_]python|opencv[-_]contrib[-_]python|emokit[-_]portrait

.PHONY: install demo test test-fast lint typecheck lock manifest-example bench clean

# The venv is exactly constraints.txt (no resolver, so nothing outside the lock comes in), plus emokit
# itself, editable. It is rebuilt from scratch when the lock or pyproject changes.
$(STAMP): pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps -r constraints.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m emokit.demo --out demo_out

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not gpu"

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
