"""Cached VAE latents (emokit.train.latent_cache): the same loss as encoding on the fly, keys that
miss on a changed VAE / resolution / clip, resumable atomic builds, and a cached training run."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from emokit.config import TrainConfig
from emokit.data.atomic import TMP_SUFFIX
from emokit.models import EMOConfig, EMOModel
from emokit.train import latent_cache
from emokit.train.dataset import ClipDataset, index_clips
from emokit.train.loop import TrainError, step_seed, train
from emokit.train.loss import DiffusionLoss
from emokit.train.noise import training_scheduler
from train_shards import build_dataset

L, D = 2, 8
RES = 64  # the tiny preset's resolution
F, N = 4, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(
        tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", L, D, extras=False
    )


def _model(seed: int = 0) -> EMOModel:
    torch.manual_seed(seed)
    config = dataclasses.replace(EMOConfig.tiny(), audio_layers=L, audio_dim=D)
    return EMOModel(config).eval()


@pytest.fixture(scope="module")
def model() -> EMOModel:
    return _model()


@pytest.fixture(scope="module")
def cache(dataset, model, tmp_path_factory):
    clips, _ = index_clips(dataset, 1, F, N)
    root = tmp_path_factory.mktemp("cache")
    return latent_cache.build_cache(model, clips, RES, root, log=lambda _: None), clips


@pytest.mark.parametrize("stage", [1, 2])
def test_cached_batch_gives_the_on_the_fly_loss(dataset, model, cache, stage):
    folder, _ = cache
    clips, _ = index_clips(dataset, stage, F, N)
    plain = ClipDataset(clips, stage, RES, F, N, seed=3)
    cached = ClipDataset(clips, stage, RES, F, N, seed=3, latents=partial(latent_cache.load_moments, folder))
    loss = DiffusionLoss(model, training_scheduler(), stage, cond_dropout=0.0, motion_dropout=0.0)
    for k in (0, 5):
        a = default_collate([plain[k], plain[k + 1]])
        b = default_collate([cached[k], cached[k + 1]])
        assert "frames" not in b and "frames_moments" in b and ("motion_moments" in b) == (stage > 1)
        gen = torch.Generator()
        with torch.no_grad():
            la = loss(a, gen.manual_seed(step_seed(0, k, 0))).item()
            lb = loss(b, gen.manual_seed(step_seed(0, k, 0))).item()
            # the latents themselves: the posterior mean from pixels vs from the fp16 moments
            za = model.encode(a["reference"])
            zb = latent_cache.sample_latents(b["reference_moments"], None, model.config.vae_scaling_factor)
            # and the posterior sample: the same draw from the same generator state
            sa = model.encode(a["reference"], torch.Generator().manual_seed(9))
            sb = latent_cache.sample_latents(
                b["reference_moments"], torch.Generator().manual_seed(9), model.config.vae_scaling_factor
            )
        assert torch.allclose(za, zb, atol=2e-3 * za.abs().max().item())
        assert (sa - za).abs().max() > 20 * (sa - sb).abs().max()  # the noise is there, and equal
        assert la == pytest.approx(lb, rel=1e-3), (k, la, lb)
        # a different generator state gives a different latent sample: the noise on it stays
        z1 = latent_cache.sample_latents(b["reference_moments"], torch.Generator().manual_seed(1), 1.0)
        z2 = latent_cache.sample_latents(b["reference_moments"], torch.Generator().manual_seed(2), 1.0)
        assert not torch.equal(z1, z2)


def test_keys_miss_on_a_changed_vae_resolution_or_clip(model, cache):
    folder, clips = cache
    assert folder.name == latent_cache.vae_key(model, RES)
    assert latent_cache.vae_key(_model(seed=0), RES) == folder.name  # same weights: shared
    assert latent_cache.vae_key(_model(seed=1), RES) != folder.name  # other VAE weights
    assert latent_cache.vae_key(model, 2 * RES) != folder.name  # other training resolution
    recropped = dataclasses.replace(clips[0], size=clips[0].size * 2)
    assert latent_cache.clip_path(folder, recropped) != latent_cache.clip_path(folder, clips[0])
    moments = np.load(latent_cache.clip_path(folder, clips[0]))
    assert moments.dtype == np.float16
    assert moments.shape == (clips[0].num_frames, 2 * model.config.latent_channels, 8, 8)
    pixel = EMOModel(EMOConfig.tiny_face())
    with pytest.raises(ValueError, match="KL VAE"):
        latent_cache.vae_key(pixel, 64)


def test_build_resumes_and_never_leaves_a_partial_file(dataset, model, tmp_path, monkeypatch):
    clips, _ = index_clips(dataset, 1, F, N)
    real = latent_cache.encode_moments
    calls = []

    def dies_on_second(m, px):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill mid-build
        return real(m, px)

    monkeypatch.setattr(latent_cache, "encode_moments", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        latent_cache.build_cache(model, clips, RES, tmp_path, log=lambda _: None)
    folder = tmp_path / latent_cache.vae_key(model, RES)
    done = sorted(folder.glob("*.npy"))
    assert len(done) == 1 and not list(folder.glob(f"*{TMP_SUFFIX}"))
    first = done[0].stat().st_mtime_ns
    monkeypatch.setattr(latent_cache, "encode_moments", real)
    calls.clear()
    counted = []
    monkeypatch.setattr(latent_cache, "encode_moments", lambda m, px: counted.append(1) or real(m, px))
    latent_cache.build_cache(model, clips, RES, tmp_path, log=lambda _: None)
    assert len(counted) == len(clips) - 1  # only the clips not cached yet
    assert done[0].stat().st_mtime_ns == first
    assert len(list(folder.glob("*.npy"))) == len(clips)


def test_a_damaged_cache_file_is_a_bad_clip_naming_it(cache):
    from emokit.train.dataset import ClipError

    folder, clips = cache
    bad = dataclasses.replace(clips[0], num_frames=clips[0].num_frames + 1)  # another clip key
    with pytest.raises(ClipError, match="cached latents"):
        latent_cache.load_moments(folder, bad, [0])


def test_training_with_cached_latents_matches_on_the_fly(dataset, tmp_path):
    cfg = TrainConfig(max_steps=2, checkpoint_every=10, log_every=1, frames=F, motion_frames=N, lr=1e-3)
    common = {"device": "cpu", "workers": 0, "progress": False, "log": lambda _: None}
    plain = train(dataset, tmp_path / "plain", 1, cfg, **common)
    cached = train(dataset, tmp_path / "cached", 1, dataclasses.replace(cfg, cache_latents=True), **common)
    assert (dataset / "latents").is_dir()
    assert cached.losses == pytest.approx(plain.losses, rel=2e-3)
    with pytest.raises(TrainError, match="pixel latent"):
        train(
            dataset,
            tmp_path / "pixel",
            1,
            dataclasses.replace(cfg, cache_latents=True, preset="tiny-face"),
            **common,
        )
