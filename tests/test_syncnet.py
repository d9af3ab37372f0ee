"""SyncNet: weight loading round trips with a tiny random network, the offset convention, MFCCs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emokit.data.syncnet import (
    SyncNet,
    SyncNetConfig,
    SyncNetError,
    load_syncnet,
    mfcc,
    save_syncnet,
    score_embeddings,
    sync_score,
)

TINY = SyncNetConfig(size=32, video_widths=[4, 8, 8, 8, 8], audio_widths=[4, 8, 8, 8, 8], hidden=8, embed=8)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = SyncNet(TINY)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a lost buffer would show
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("name", ["net.safetensors", "net.pt", "folder"])
def test_save_load_round_trip(tiny, tmp_path, name):
    path = save_syncnet(tiny, tmp_path / name)
    net = load_syncnet(path)
    clips = torch.rand(2, 3, 5, 32, 32)
    mf = torch.randn(2, 1, 13, 20)
    with torch.no_grad():
        torch.testing.assert_close(net.embed_video(clips), tiny.embed_video(clips), rtol=0, atol=0)
        torch.testing.assert_close(net.embed_audio(mf), tiny.embed_audio(mf), rtol=0, atol=0)


def test_bad_checkpoints_fail_in_one_line(tiny, tmp_path):
    save_syncnet(tiny, tmp_path / "net.pt")
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    state["config"]["embed"] = 16
    torch.save(state, tmp_path / "wrong.pt")
    for bad, match in [
        (tmp_path / "wrong.pt", "do not fit"),
        (tmp_path / "missing.pt", "no such file"),
        ("nobody/no-such-syncnet", "hub"),  # HF_HUB_OFFLINE=1 in tests: not in the cache
    ]:
        with pytest.raises(SyncNetError, match=match) as e:
            load_syncnet(bad)
        assert "\n" not in str(e.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SyncNetError, match="not a torch checkpoint"):
        load_syncnet(tmp_path / "junk.pt")


def test_offset_sign_is_audio_late_positive():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(80, 8))
    for k in (-7, 0, 4):
        a = np.roll(v, k, axis=0) + 0.05 * rng.normal(size=v.shape)  # a[t + k] = v[t]: audio late by k
        s = score_embeddings(v, a)
        assert s.offset_frames == k
        assert s.confidence > 1.0 and s.distance < 0.5


def test_mfcc_frames_steady_tone_and_gain():
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 400 * np.arange(sr) / sr)  # 4 periods per 10 ms hop
    m = mfcc(tone, sr)
    assert m.shape == (13, 1 + (sr - 400) // 160)  # 100 Hz
    assert np.allclose(m, m[:, :1], atol=1e-3)  # every frame sees the same waveform
    noise = np.random.default_rng(0).normal(scale=0.1, size=sr)
    # Half the amplitude = a quarter of the power in all 40 bands: c0 (orthonormal DCT) drops by
    # 2 ln 2 · 40 / sqrt(40); the other coefficients do not change.
    d = mfcc(0.5 * noise, sr) - mfcc(noise, sr)
    assert np.allclose(d[0], -2 * np.log(2) * np.sqrt(40), atol=1e-3)
    assert np.abs(d[1:]).max() < 1e-3


def test_sync_score_on_real_frames(tiny, videos):
    from emokit.data.audio import load_audio
    from emokit.data.decode import read_frames

    path = videos / "speaker_c_25fps_512.mp4"
    frames = np.stack([f[256::8, 128:384:8] for f in read_frames(path, 0.0, 2.0, 25)])  # 32² mouth area
    s = sync_score(tiny, frames, load_audio(path, 0.0, 2.0))
    assert -15 <= s.offset_frames <= 15 and len(s.curve) == 31
    assert np.isfinite(s.curve).all() and s.confidence >= 0 and s.distance == min(s.curve)
    with pytest.raises(SyncNetError, match="too few"):
        sync_score(tiny, frames[:20], load_audio(path, 0.0, 1.0))
