"""One run per dataset: a second run exits with one line and leaves the first run's temp files."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emokit.data.ingest import ingest
from emokit.data.label import label
from emokit.data.lock import DatasetLockedError, dataset_lock


def test_second_run_on_a_locked_dataset_exits_and_keeps_the_first_runs_temps(videos, tmp_path):
    ds = tmp_path / "ds"
    video = videos / "speaker_d_25fps_410x412.mp4"
    ingest([video], ds, workers=1, progress=False)
    (ds / "shards").mkdir()
    in_flight = [ds / ".manifest.parquet.abc.tmp", ds / "shards" / ".shard-00000.parquet.abc.tmp"]
    with dataset_lock(ds):  # a first run, busy writing its temps
        for t in in_flight:
            t.write_bytes(b"partial")
        with pytest.raises(DatasetLockedError, match="in use by another emokit run"):
            ingest([video], ds, workers=1, progress=False)
        with pytest.raises(DatasetLockedError, match=str(ds)):
            label(ds, workers=1, progress=False)
        r = subprocess.run(
            [sys.executable, "-m", "emokit", "ingest", str(video), "-o", str(ds), "-q"],
            capture_output=True,
            text=True,
        )
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and str(ds) in r.stderr, r.stderr
        assert all(t.read_bytes() == b"partial" for t in in_flight)  # not cleaned from under it
    s = ingest([video], ds, workers=1, progress=False)  # the lock is gone with its holder
    assert s.cached == 1 and not in_flight[0].exists()  # stale temps cleaned, under the lock
