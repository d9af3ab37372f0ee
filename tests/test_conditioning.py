"""What training feeds the model equals what generation feeds it where the two meet: the first
clip's motion frames, the audio/speed windows at clip edges, and the CFG drop of both conditions.

Real media: the dataset is built from a real video (train_shards), generation renders a real
portrait with a real speech file through a tiny random model and a tiny random wav2vec.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emokit.generate.generator import Generator, Speech, _clip_tokens
from emokit.generate.portrait import load_portrait
from emokit.models import EMOConfig, EMOModel
from emokit.models.window import context_rows
from emokit.train.dataset import ClipDataset, index_clips
from emokit.train.loss import condition_drops
from emokit.train.noise import training_scheduler
from train_shards import build_dataset

L, D, SIZE = 2, 32, 64  # save_tiny_wav2vec: 2 layers x 32
F, N = 12, 4


@pytest.fixture(scope="module")
def model() -> EMOModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = EMOModel(dataclasses.replace(EMOConfig.tiny(), audio_layers=L, audio_dim=D)).eval()
        # zero-initialised output layers would make every window give the same (zero) tokens
        for p in m.audio_proj.mlp[-1].parameters():
            torch.nn.init.normal_(p, std=0.1)
    return m


@pytest.fixture(scope="module")
def generator(model, tmp_path_factory) -> Generator:
    from emokit.data.wav2vec import AudioEncoder, save_tiny_wav2vec

    w2v = save_tiny_wav2vec(tmp_path_factory.mktemp("w2v"))
    alphas = training_scheduler().alphas_cumprod
    return Generator.from_parts(model, alphas, AudioEncoder(w2v), frames=F, motion_frames=N, progress=False)


def test_first_clip_motion_input_equals_training_dropped_motion(model, generator, portraits, audio_dir):
    """Generation's first clip gets the motion-frame features training gives a sample whose motion
    frames are dropped (zero maps); later clips get real features of the previous clip."""
    seen = []
    clip_reference = generator._clip_reference

    def record(portrait_ref, motion, first=False):
        out = clip_reference(portrait_ref, motion, first)
        seen.append(out.motion)
        return out

    generator._clip_reference = record  # type: ignore[method-assign]
    portrait = load_portrait(portraits / "woman_frontal.jpg", size=SIZE)
    speech = Speech.load(audio_dir / "speech_en_8s_16k_stereo.wav")
    speech = dataclasses.replace(speech, frames=F + 1)  # two clips
    frames = list(generator.render(portrait, speech, steps=1, cfg=1.0))
    assert len(frames) == F + 1 and len(seen) == 2

    # training: a real reference and real motion latents, that sample's motion dropped
    with torch.no_grad():
        pixels = torch.from_numpy(portrait.image).permute(2, 0, 1)[None].float() / 127.5 - 1
        ref_latents = model.encode(pixels)
        motion = torch.randn(1, N, 4, SIZE // 8, SIZE // 8)
        trained = model.reference(ref_latents, motion, drop_motion=torch.tensor([True])).motion
        kept = model.reference(ref_latents, motion, drop_motion=torch.tensor([False])).motion
        zero_latents = model.motion_features(torch.zeros_like(motion))  # what main fed instead
    first, second = seen
    assert first.keys() == trained.keys()
    for site in trained:
        assert first[site].shape == trained[site].shape
        assert torch.equal(first[site], trained[site])  # the very same input: zero maps
        assert torch.count_nonzero(trained[site]) == 0
        assert torch.count_nonzero(kept[site]) > 0  # not dropped: real features
        assert torch.count_nonzero(second[site]) > 0  # the second clip sees the first one
    assert any(torch.count_nonzero(v) > 0 for v in zero_latents.values())


def test_training_draws_dropped_motion(model):
    """motion_dropout makes DiffusionLoss feed zero maps to that share of samples (p = 1 → all)."""
    from emokit.train.loss import DiffusionLoss

    calls = []
    reference = model.reference

    def spy(ref_latents, motion=None, drop_motion=None):
        calls.append(drop_motion)
        return reference(ref_latents, motion, drop_motion)

    net = DiffusionLoss(model, training_scheduler(), 2, 0.0, 0.0, motion_dropout=1.0)
    batch = {
        "frames": torch.rand(1, 2, 3, SIZE, SIZE) * 2 - 1,
        "reference": torch.rand(1, 3, SIZE, SIZE) * 2 - 1,
        "motion": torch.rand(1, N, 3, SIZE, SIZE) * 2 - 1,
        "face_mask": torch.ones(1, 1, SIZE, SIZE),
        "audio": torch.randn(1, 2 + 4, L, D),
        "speed": torch.zeros(1, 2 + 4),
    }
    model.reference = spy  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            net(batch, torch.Generator().manual_seed(0))
    finally:
        del model.reference
    assert len(calls) == 1 and calls[0] is not None and bool(calls[0].all())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(
        tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", L, D, extras=False
    )


def test_dataset_clip_edges_see_real_neighbouring_tokens(dataset):
    """Stage-2 samples carry ±2 frames of the clip's real audio tokens and speeds around the f
    target frames; rows are repeated only past the clip's true last frame."""
    import pyarrow.parquet as pq

    clips, _ = index_clips(dataset, 2, F, N)
    ds = ClipDataset(clips, 2, SIZE, F, N, seed=0)
    ends = 0
    for k in range(12):
        sample = ds[k]
        clip = next(c for c in clips if c.clip_id == sample["clip_id"])
        row = pq.ParquetFile(clip.shard).read_row_group(clip.row_group).slice(clip.row, 1).to_pylist()[0]
        tokens = np.frombuffer(row["audio_embeddings"], "<f2").reshape(clip.audio_shape).astype(np.float32)
        audio = sample["audio"].numpy()
        assert audio.shape == (F + 4, L, D)
        # which frame the clip starts at: the only offset whose tokens match its first frame
        starts = [s for s in range(len(tokens)) if np.array_equal(tokens[s], audio[2])]
        assert len(starts) == 1
        s = starts[0]
        assert s >= N  # N motion frames come first, so the two frames before exist: real ones
        want = tokens[np.clip(np.arange(s - 2, s + F + 2), 0, len(tokens) - 1)]
        np.testing.assert_array_equal(audio, want)
        np.testing.assert_array_equal(audio[:2], tokens[s - 2 : s])  # not the first token repeated
        speed = clip.velocity[np.clip(np.arange(s - 2, s + F + 2), 0, clip.num_frames - 1)]
        np.testing.assert_array_equal(sample["speed"].numpy(), speed)
        ends += s + F + 2 > len(tokens)
    assert ends < 12  # some samples had real tokens after the clip too


def test_generator_clip_edges_see_real_neighbouring_tokens(model):
    """The generator's clip slices with context give every frame the audio-projection output it
    would get from the whole track: clip edges see the neighbouring clip's tokens."""
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((2 * F + 5, L, D)).astype(np.float16)  # 3 clips, the last short
    with torch.no_grad():
        whole = model.audio_proj(torch.from_numpy(tokens.astype(np.float32))[None])[0]  # [T, ...]
        for k in range(3):
            clip = _clip_tokens(tokens, k * F, F, 2, torch.device("cpu")).float()
            assert clip.shape == (1, F + 4, L, D)
            out = model.audio_proj(clip, frames=F)[0]
            keep = min(F, len(tokens) - k * F)
            torch.testing.assert_close(out[:keep], whole[k * F : k * F + keep], rtol=0, atol=1e-6)
        # cutting the clip alone (the old slicing) changes the frames at its edges
        alone = model.audio_proj(torch.from_numpy(tokens[F : 2 * F].astype(np.float32))[None])[0]
        assert not torch.allclose(alone[0], whole[F], atol=1e-4)
        assert not torch.allclose(alone[-1], whole[2 * F - 1], atol=1e-4)
    assert context_rows(0, 3, 2, 10) == [0, 0, 0, 1, 2, 3, 4]
    assert context_rows(8, 3, 2, 10) == [6, 7, 8, 9, 9, 9, 9]


def test_joint_condition_drop_rate():
    """Over many draws: reference alone, audio alone and both each at their recipe rate (on main
    the joint drop was the product of two independent 5 % draws: 0.25 %)."""
    gen = torch.Generator().manual_seed(0)
    n, alone, both = 400_000, 0.05, 0.05
    ref, audio = condition_drops(n, gen, alone, both)
    rates = {
        "both": (ref & audio).float().mean().item(),
        "ref alone": (ref & ~audio).float().mean().item(),
        "audio alone": (audio & ~ref).float().mean().item(),
    }
    sigma = (0.05 * 0.95 / n) ** 0.5
    for name, rate in rates.items():
        assert abs(rate - 0.05) < 5 * sigma, (name, rates)
    ref, audio = condition_drops(n, gen, 0.05, 0.0)  # no "both" bucket: never both
    assert not bool((ref & audio).any()) and abs(ref.float().mean().item() - 0.05) < 5 * sigma
