"""Executors are interchangeable around the same stage code: local pool and Ray agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emokit.data.executor import Failed, run
from emokit.data.ingest import ingest
from emokit.data.schema import read_table


@pytest.fixture(autouse=True, scope="module")
def _ray_shut_down_after():
    """Ray started in this process keeps gRPC threads running; a process forked later (a DataLoader
    worker in another module) can crash on them, so the cluster goes when this module is done."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _half(x: int) -> float:
    if x == 3:
        raise ValueError("three is bad\nsecond line")
    return x / 2


def _die_on_three(x: int) -> float:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # what a native crash or the OOM killer looks like
    return x / 2


def _record_and_sleep(folder: str) -> None:
    (Path(folder) / f"pid-{os.getpid()}").touch()
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie no one reaps holds no memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); from test_executor import _record_and_sleep;"
        "from emokit.data.executor import run; list(run(_record_and_sleep, [sys.argv[1]] * 2, workers=2))"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.name[4:]) for p in tmp_path.glob("pid-*")]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    os.kill(parent.pid, signal.SIGKILL)  # what the OOM killer does to the main process
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not [p for p in pids if _alive(p)], "workers outlived their killed parent"
    finally:
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("pause", [0.0, 0.3])  # 0.3: the worker dies while the caller is away
def test_a_worker_that_dies_costs_only_its_own_sample(pause):
    done = []
    for d in run(_die_on_three, range(1, 9), workers=2):
        done.append(d)
        time.sleep(pause)
    done.sort(key=lambda d: d.index)
    assert [d.index for d in done] == list(range(8))  # every sample reported once
    assert [d.result for d in done if d.sample != 3] == [x / 2 for x in range(1, 9) if x != 3]
    assert isinstance(done[2].result, Failed) and "process died" in done[2].result.reason


def test_local_pool_results_and_errors_as_values():
    done = sorted(run(_half, [1, 2, 3, 4], workers=2), key=lambda d: d.index)
    assert [d.result for d in done[:2]] == [0.5, 1.0]
    assert done[2].result == Failed("ValueError: three is bad")
    assert done[3].result == 2.0
    with pytest.raises(ValueError, match="unknown engine"):
        list(run(_half, [1], engine="spark"))


def test_ray_engine_gives_the_local_manifest(videos, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'emokit[ray]'")
    inputs = [videos / "speaker_d_25fps_410x412.mp4", videos / "speaker_vfr_700.mp4"]
    ingest(inputs, tmp_path / "local", workers=2, progress=False)
    ingest(inputs, tmp_path / "ray", workers=2, engine="ray", progress=False)
    assert (
        read_table(tmp_path / "ray" / "manifest.parquet").to_pylist()
        == read_table(tmp_path / "local" / "manifest.parquet").to_pylist()
    )


def test_ray_engine_gives_the_local_shards(videos, tmp_path):
    """The label stage (torch-free workers) on Ray, Wav2Vec2 in the driver: the same shards."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'emokit[ray]'")
    from emokit.config import LabelConfig
    from emokit.data.label import label
    from emokit.data.wav2vec import save_tiny_wav2vec

    cfg = LabelConfig(size=64, audio_model=str(save_tiny_wav2vec(tmp_path / "w2v")))
    ingest([videos / "speaker_d_25fps_410x412.mp4"], tmp_path / "local", workers=1, progress=False)
    ingest([videos / "speaker_d_25fps_410x412.mp4"], tmp_path / "ray", workers=1, progress=False)
    label(tmp_path / "local", cfg, workers=2, progress=False)
    label(tmp_path / "ray", cfg, workers=2, engine="ray", progress=False)
    shard = "shards/shard-00000.parquet"
    local = read_table(tmp_path / "local" / shard).to_pylist()
    ray_rows = read_table(tmp_path / "ray" / shard).to_pylist()
    assert [r["status"] for r in ray_rows] == ["ok"] * len(local) and local
    for a, b in zip(local, ray_rows):
        assert {k: v for k, v in a.items() if k != "source_path"} == {
            k: v for k, v in b.items() if k != "source_path"
        }


@pytest.mark.slow  # starting Ray alone takes 10-30 s
def test_ray_crashed_worker_costs_only_its_sample_and_tasks_are_bounded():
    """A Ray worker killed mid-run (SIGKILL, as a native crash) is retried alone, then reported;
    the run goes on. Samples are pulled only as task slots free up (2 x workers in flight)."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'emokit[ray]'")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers lack tests/
    pulled: list[int] = []

    def samples():
        for x in range(1, 9):
            pulled.append(x)
            yield x

    results = run(_die_on_three, samples(), workers=2, engine="ray")
    first = next(results)
    assert len(pulled) <= 4  # backpressure: not all 8 submitted at once
    done = sorted([first, *results], key=lambda d: d.index)
    assert [d.index for d in done] == list(range(8))
    assert [d.result for d in done if d.sample != 3] == [x / 2 for x in range(1, 9) if x != 3]
    assert isinstance(done[2].result, Failed) and "process died" in done[2].result.reason
