"""Train on shards that `emokit label` made from a real talking-head video: ingest → label →
stages 1, 2, 3 → a model for inference whose audio input fits the labelled wav2vec tokens."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from emokit.config import LabelConfig, TrainConfig
from emokit.data.ingest import ingest
from emokit.data.label import label
from emokit.data.wav2vec import save_tiny_wav2vec
from emokit.train.checkpoint import load_for_inference
from emokit.train.dataset import ClipDataset, decode_frames, index_clips
from emokit.train.loop import train


@pytest.fixture(scope="module")
def labelled(videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    w2v = save_tiny_wav2vec(root / "w2v")
    ds = root / "ds"
    ingest([videos / "speaker_d_25fps_410x412.mp4"], ds, workers=1, progress=False)
    label(ds, LabelConfig(size=96, audio_model=str(w2v), shard_size=2), workers=1, progress=False)
    return ds


def test_label_shards_feed_every_frame(labelled):
    clips, summary = index_clips(labelled, 2, 12, 4, TrainConfig().drop_flags)
    assert summary.usable == len(clips) >= 1
    clip = clips[0]
    row = pq.ParquetFile(clip.shard).read_row_group(clip.row_group).slice(clip.row, 1).to_pylist()[0]
    last = decode_frames(row["video_mp4"], [0, clip.num_frames - 1], clip.fps, 64)
    assert last.shape == (2, 64, 64, 3) and last[1].std() > 0  # the mp4 holds every labelled frame
    s = ClipDataset(clips, 2, 64, frames=12, motion_frames=4, seed=0)[0]
    tokens = np.frombuffer(row["audio_embeddings"], "<f2").reshape(row["audio_shape"])
    ctx = (len(s["audio"]) - 12) // 2  # the sample carries ±ctx neighbouring rows (clip edges)
    core = s["audio"][ctx : ctx + 12]
    starts = [o for o in range(len(tokens) - 11) if np.array_equal(tokens[o : o + 12], core)]
    assert len(starts) == 1
    velocity = np.float32(row["velocity"][starts[0] : starts[0] + 12])
    np.testing.assert_allclose(s["speed"][ctx : ctx + 12], velocity)
    assert 0 < float(s["face_mask"].mean()) < 1


def test_three_stages_on_labelled_shards(labelled, tmp_path):
    cfg = TrainConfig(max_steps=1, checkpoint_every=100, frames=4, motion_frames=2, log_every=1)
    for stage in (1, 2, 3):
        r = train(labelled, tmp_path / "run", stage, cfg, workers=1, progress=False, log=lambda _: None)
        assert r.step == 1 and r.final is not None and r.losses and np.isfinite(r.losses[0])
    model = load_for_inference(tmp_path / "run")
    shape = pq.read_table(next((labelled / "shards").glob("*.parquet")), columns=["audio_shape"])
    _, layers, dim = shape.column("audio_shape")[0].as_py()
    assert (model.config.audio_layers, model.config.audio_dim) == (layers, dim)
