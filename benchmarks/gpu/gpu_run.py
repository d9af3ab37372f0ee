"""bench_gpu's frame: what a run measures (Settings), its time budget, and guarded parts that
record their error in the results and let the run go on."""

from __future__ import annotations

import gc
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Settings:
    """What one run measures: FULL on the H200, DRY (same code paths, tiny sizes) on a CPU."""

    preset: str
    device: str
    bf16: bool
    steps: int  # timed training steps
    warmup: int
    batch_caps: dict[int, int]  # stage → largest batch tried
    gen_steps: tuple[int, ...]  # DDIM steps: EMO's first, then fewer
    gen_clips: int  # timed clips per generation setting
    flat_seconds: tuple[float, float]
    workers: tuple[int, ...]
    reader_samples: int
    budget_s: float
    part_s: float  # wall-clock cap of one training (stage, checkpointing) search
    frames: int = 12
    motion_frames: int = 4
    cfg: float = 3.5
    flat_steps: int = 1
    fast_solver: tuple[str, int] = ("unipc", 10)  # emokit's faster named setting (BENCHMARKS "Samplers")
    peak_tflops: float = 790.0
    stages: tuple[int, ...] = (2, 1, 3)  # stage 2 first: the figure the targets are about


FULL = Settings(
    "sd15", "cuda", True, 5, 2, {1: 64, 2: 16, 3: 16}, (40, 20, 10), 2, (10, 60), (4, 8, 16), 48, 420, 20
)
DRY = Settings(
    "tiny",
    "cpu",
    False,
    2,
    1,
    {1: 2, 2: 2, 3: 2},
    (2, 1),
    1,
    (1, 2),
    (0, 1),
    3,
    60,
    60,
    fast_solver=("unipc", 2),
)


class Budget:
    """The run's wall-clock budget: parts ask it before starting."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def free_memory(model: torch.nn.Module | None = None) -> None:
    """Drop leftovers of a part (gradients an OOM left behind, cached blocks)."""
    if model is not None:
        for p in model.parameters():
            p.grad = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]


class Run:
    """The results tree, the budget, and guarded parts that record their error and go on."""

    def __init__(self, settings: Settings, out: Path) -> None:
        self.s, self.out, self.budget = settings, out, Budget(settings.budget_s)
        self.results: dict[str, Any] = {"complete": False, "settings": asdict(settings)}

    def part(self, path: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict | None:
        *parents, leaf = path.split("/")
        node = self.results
        for k in parents:
            node = node.setdefault(k, {})
        if self.budget.left() < need_s:
            node[leaf] = {"skipped": f"time budget: {self.budget.left():.0f} s left, needs ~{need_s:.0f} s"}
            self.write()
            return None
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # an OOM or a missing wheel ends this part only
            traceback.print_exc()
            out = {"error": one_line(e)}
        out["part_s"] = round(time.perf_counter() - t, 1)
        node[leaf] = out
        print(f"[{self.budget.elapsed():6.1f} s] {path}: {json.dumps(out)[:300]}", flush=True)
        free_memory()
        self.write()
        return out

    def write(self) -> None:
        from emokit.data.atomic import atomic_path

        self.results["elapsed_s"] = round(self.budget.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "bench_gpu.json") as tmp:
            tmp.write_text(json.dumps(self.results, indent=1, default=str))
