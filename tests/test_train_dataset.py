"""The trainer's data side: shard index + recipe filters, frame-exact windows, determinism."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from emokit.train.dataset import (
    ClipDataset,
    DatasetError,
    StepBatches,
    decode_frames,
    face_mask,
    index_clips,
)
from train_shards import build_dataset, clip_frames, encode_mp4

DROP = ("multi_face", "captions")
L, D = 2, 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", L, D)


def _all_frames(mp4: bytes, res: int) -> np.ndarray:
    import io

    import av

    with av.open(io.BytesIO(mp4)) as c:
        return np.stack(
            [
                f.to_ndarray(format="rgb24", width=res, height=res, interpolation="AREA")
                for f in c.decode(video=0)
            ]
        )


def test_index_applies_recipe_filters(dataset):
    clips1, s1 = index_clips(dataset, 1, 12, 4, DROP)
    assert (s1.shards, s1.rows, s1.rejected, s1.usable) == (2, 6, 1, 4)  # no-audio clip kept
    assert s1.dropped == {"flag multi_face": 1}
    clips2, s2 = index_clips(dataset, 2, 12, 4, DROP)
    assert s2.usable == 3 and s2.dropped == {"flag multi_face": 1, "no audio": 1}
    assert all(c.audio_shape == (24, L, D) for c in clips2)
    _, s3 = index_clips(dataset, 3, 30, 4, ())  # 24-frame clips cannot give 34-frame windows
    assert s3.usable == 0 and s3.dropped == {"shorter than 34 frames": 4, "no audio": 1}
    with pytest.raises(DatasetError, match="no label shards"):
        index_clips(dataset / "shards" / "nope", 1, 12, 4)


def test_decode_frames_seeks_to_exact_frames(videos):
    frames = clip_frames(videos / "head_turn_25fps_224.mp4", 0, 40, 64)
    mp4 = encode_mp4(frames, audio=True)  # GOP 12: later frames need a real seek
    full = _all_frames(mp4, 32)
    want = [37, 3, 25, 25, 13]
    np.testing.assert_array_equal(decode_frames(mp4, want, 30, 32), full[want])
    with pytest.raises(ValueError, match="lacks frame"):
        decode_frames(mp4, [39, 40], 30, 32)


def test_far_reference_decodes_without_the_span_between(videos):
    """The reference frame gets its own seek: decoding a window at the end of a clip and a
    reference at its start decodes about one keyframe interval per run, not the whole clip."""
    frames = clip_frames(videos / "head_turn_25fps_224.mp4", 0, 96, 32)
    mp4 = encode_mp4(frames, audio=False)  # GOP 12
    full = _all_frames(mp4, 32)
    want = [*range(78, 94), 2]  # 16-frame window + a reference 76 frames before it
    stats: dict[str, int] = {}
    np.testing.assert_array_equal(decode_frames(mp4, want, 30, 32, stats=stats), full[want])
    assert stats["decoded"] <= 3 + 12 + 16  # 0..2, then keyframe 72 (at most 12 before 78)..93
    near: dict[str, int] = {}
    decode_frames(mp4, [*range(78, 94), 90], 30, 32, stats=near)  # a reference inside: one run
    assert near["decoded"] <= 12 + 16


def test_stage2_window_audio_speed_and_mask_align(dataset):
    clips, _ = index_clips(dataset, 2, 6, 3, DROP)
    ds = ClipDataset(clips, 2, 32, frames=6, motion_frames=3, seed=5)
    s = ds[4]
    assert s["frames"].shape == (6, 3, 32, 32) and s["motion"].shape == (3, 3, 32, 32)
    assert s["reference"].shape == (3, 32, 32) and s["face_mask"].shape == (1, 32, 32)
    assert s["audio"].shape == (6 + 4, L, D) and s["audio"].dtype == torch.float32  # ±2 context
    assert -1.0 <= float(s["frames"].min()) and float(s["frames"].max()) <= 1.0
    clip = clips[ds.clip_of(4)]
    row = pq.read_table(clip.shard).slice(clip.row, 1).to_pylist()[0]
    assert row["clip_id"] == s["clip_id"]
    tokens = np.frombuffer(row["audio_embeddings"], "<f2").reshape(row["audio_shape"])
    starts = [o for o in range(len(tokens) - 5) if np.array_equal(tokens[o : o + 6], s["audio"][2:8])]
    assert len(starts) == 1  # the audio is one contiguous window; find where it starts
    o = starts[0]
    assert o >= 3
    rows = np.clip(np.arange(o - 2, o + 8), 0, len(tokens) - 1)  # ±2 real neighbours
    np.testing.assert_array_equal(s["audio"], tokens[rows])
    np.testing.assert_allclose(s["speed"], np.asarray(row["velocity"], np.float32)[rows])
    pixels = torch.from_numpy(_all_frames(row["video_mp4"], 32)).permute(0, 3, 1, 2) / 127.5 - 1
    torch.testing.assert_close(s["frames"], pixels[o : o + 6])
    torch.testing.assert_close(s["motion"], pixels[o - 3 : o])  # motion frames directly precede
    assert any(torch.equal(s["reference"], p) for p in pixels)
    # fixture box (0.25..0.75, 0.2..0.8 of the side) → mask rows 6..26, columns 8..24 at 32 px
    assert s["face_mask"][0, 6:26, 8:24].all() and s["face_mask"].sum() == 20 * 16


@pytest.mark.crossrun
def test_stage1_pairs_and_determinism(dataset):
    clips, _ = index_clips(dataset, 1, 12, 4, DROP)
    ds = ClipDataset(clips, 1, 32, seed=0)
    a, b = ds[7], ds[7]
    assert set(a) == {"clip_id", "frames", "reference", "face_mask"}
    assert a["frames"].shape == (1, 3, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in ("frames", "reference", "face_mask"))
    assert not torch.equal(a["frames"][0], a["reference"])  # target and reference differ
    other = ClipDataset(clips, 1, 32, seed=1)[7]
    assert not torch.equal(a["frames"], other["frames"]) or a["clip_id"] != other["clip_id"]
    # every clip appears once per pass over the data (a seeded permutation per epoch)
    assert sorted(ds.clip_of(k) for k in range(len(ds))) == list(range(len(ds)))
    assert sorted(ds.clip_of(k) for k in range(len(ds), 2 * len(ds))) == list(range(len(ds)))


@pytest.mark.crossrun
def test_worker_processes_yield_the_same_batches(dataset):
    clips, _ = index_clips(dataset, 2, 4, 2, DROP)
    ds = ClipDataset(clips, 2, 32, frames=4, motion_frames=2, seed=3)

    def first(workers: int, start: int) -> list[dict]:
        # spawned, not forked: by this point the pytest process holds threads of MediaPipe, Ray and
        # PyAV from other modules, and a forked worker crashed on them in the full suite (never alone)
        ctx = "spawn" if workers else None
        loader = DataLoader(
            ds,
            batch_sampler=StepBatches(2, start_step=start),
            num_workers=workers,
            multiprocessing_context=ctx,
        )
        it = iter(loader)
        return [next(it) for _ in range(2)]

    inproc, forked = first(0, 0), first(1, 0)
    resumed = first(0, 1)  # a run resumed at step 1 sees what step 1 saw
    for x, y in zip(inproc, forked):
        assert all(torch.equal(x[k], y[k]) for k in ("frames", "motion", "audio", "speed"))
    assert torch.equal(inproc[1]["frames"], resumed[0]["frames"])


def test_step_batches_split_ranks():
    def take(rank: int, world: int, n: int = 3) -> list[list[int]]:
        it = iter(StepBatches(2, start_step=0, rank=rank, world=world))
        return [next(it) for _ in range(n)]

    r0, r1 = take(0, 2), take(1, 2)
    seen = [k for batch in r0 + r1 for k in batch]
    assert sorted(seen) == list(range(12))  # disjoint and complete over 3 steps × 2 ranks × 2
    assert take(0, 1) == [[0, 1], [2, 3], [4, 5]]


def test_face_mask_clips_to_frame():
    m = face_mask([-10, 500, 30, 700], 512, 64)  # box hanging off the left and bottom edges
    assert m[0, 62:, :4].all() and m.sum() == 2 * 4
