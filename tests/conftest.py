"""Shared test fixtures: the real media in ../shared/data (see its SOURCES.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real media; tests that need it skip in a clone without ../shared."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def videos(shared_data: Path) -> Path:
    return shared_data / "videos"


@pytest.fixture(scope="session")
def portraits(shared_data: Path) -> Path:
    return shared_data / "portraits"


@pytest.fixture(scope="session")
def audio_dir(shared_data: Path) -> Path:
    return shared_data / "audio"


def read_rgb(path: Path):
    """A real photo as an RGB uint8 array (what the face and pose code takes)."""
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# Modules whose tests run whole pipelines (ingest/label/train/generate as subprocesses, DDP, the
# demo's sample): marked `slow` here, in one place, so `make test-fast` leaves them out.
SLOW_MODULES = {
    "test_avsync.py",
    "test_checkpoint_integrity.py",  # trains, damages and resumes runs
    "test_crop_label.py",  # ingest + label CLI runs
    "test_dataset_integrity.py",
    "test_evaluate.py",
    "test_executor.py",  # starts process pools and a Ray cluster, kills workers
    "test_generate_cli.py",
    "test_generate_video.py",
    "test_ingest.py",
    "test_label.py",
    "test_jumpcuts.py",
    "test_manifest_example.py",
    "test_os_errors.py",
    "test_sample.py",
    "test_source_flags.py",
    "test_stillness.py",
    "test_train_ddp.py",
    "test_train_label.py",
    "test_train_loop.py",
    "test_train_resume.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the SLOW_MODULES tests `slow`; `gpu` tests skip cleanly where torch sees no CUDA."""
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
