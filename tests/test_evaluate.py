"""`emokit evaluate` on real talking-head video: against itself, a still, moved audio; the
weighted metrics with tiny TorchScript / SyncNet networks saved here and loaded back by path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emokit.cli import app
from emokit.evaluate import PSNR_CAP_DB, evaluate
from emokit.evaluate.features import FeatureNetError, frechet_distance
from tests.avmedia import moved_audio, scaled, still_face


@pytest.fixture(scope="module")
def clips(videos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    ref = scaled(videos / "speaker_c_25fps_512.mp4", tmp / "ref.mp4", 256, 7.4)
    return dict(
        tmp=tmp,
        ref=ref,
        late=moved_audio(ref, tmp / "late.mp4", 0.2, 7.4),  # audio 6 frames late at 30 FPS
        still=still_face(ref, tmp / "still.mp4", 7.4),
    )


@pytest.fixture(scope="module")
def reports(clips):
    return {k: evaluate(clips[k], clips["ref"]) for k in ("ref", "late", "still")}


def test_video_against_itself(reports):
    r = reports["ref"]
    assert r.psnr_db == PSNR_CAP_DB and r.ssim == pytest.approx(1.0, abs=1e-12)
    assert r.mouth_corr == pytest.approx(1.0, abs=1e-12)
    assert r.av_lag_vs_reference == 0
    assert r.head_speed_ratio == pytest.approx(1.0)
    assert r.fid is None and r.fvd is None and r.sync_c is None and r.csim is None  # no weights: absent


def test_still_has_no_mouth_correlation(reports):
    r = reports["still"]
    assert r.mouth_corr == 0.0  # a mouth that does not move: defined as 0, not a random ratio
    assert r.mouth_std_generated < 0.005 < reports["ref"].mouth_std_generated
    assert r.psnr_db < 30 and r.ssim < 0.95
    assert r.head_speed_ratio < 0.2  # the still head barely moves against the real one
    assert r.av_sync_confidence < reports["ref"].av_sync_confidence


def test_moved_audio_offset_found(reports):
    r = reports["late"]
    assert r.av_lag_vs_reference == pytest.approx(6, abs=1)
    assert r.psnr_db == PSNR_CAP_DB  # same picture (stream copied)
    if r.av_offset_frames is not None:  # stored only above the method's reliability threshold
        assert abs(r.av_offset_frames - 6) <= 2


class _Pool(torch.nn.Module):
    """A tiny feature network: strided conv + global mean (stands in for Inception/I3D/ArcFace)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        self.conv = conv(3, 6, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        return y.flatten(2).mean(-1)


def test_weighted_metrics_with_tiny_networks_cli_and_json(clips, tmp_path):
    from emokit.data.syncnet import SyncNet, SyncNetConfig, save_syncnet

    torch.manual_seed(0)
    paths = {}
    for name, dims in (("inception", 2), ("i3d", 3), ("arcface", 2)):
        paths[name] = tmp_path / f"{name}.pt"
        torch.jit.save(torch.jit.script(_Pool(dims).eval()), str(paths[name]))
    small = SyncNetConfig(
        size=32, video_widths=[4, 8, 8, 8, 8], audio_widths=[4, 8, 8, 8, 8], hidden=8, embed=8
    )
    paths["syncnet"] = save_syncnet(SyncNet(small).eval(), tmp_path / "syncnet.safetensors")
    short = scaled(clips["ref"], tmp_path / "short.mp4", 128, 2.4)
    still = still_face(short, tmp_path / "short_still.mp4", 2.4)
    out = tmp_path / "report.json"
    args = ["evaluate", str(short), "--reference", str(short), "-o", str(out)]
    args += [a for k, p in paths.items() for a in (f"--{k}", str(p))]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "psnr_db" in r.output and "mouth_corr" in r.output
    rep = json.loads(out.read_text())
    assert rep["psnr_db"] == PSNR_CAP_DB and rep["mouth_corr"] == pytest.approx(1.0)
    assert abs(rep["fid"]) < 1e-6 and abs(rep["fvd"]) < 1e-6  # identical features on both sides
    assert rep["csim"] > 0.9 and rep["sync_c"] is not None and -15 <= rep["sync_offset_frames"] <= 15
    r2 = evaluate(still, short, inception=str(paths["inception"]), arcface=str(paths["arcface"]))
    assert r2.fid > 1e-4 and r2.csim > 0.99  # the still is the reference's first face, held
    bad = CliRunner().invoke(
        app, ["evaluate", str(short), "-r", str(short), "--i3d", str(tmp_path / "no.pt")]
    )
    assert bad.exit_code == 2 and "no such file" in bad.output and len(bad.output.strip().splitlines()) == 1
    with pytest.raises(FeatureNetError, match="hub"):
        evaluate(short, short, inception="nobody/no-such-inception")  # HF_HUB_OFFLINE=1: one line


def test_frechet_distance_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2.0 + 1.0
    # ||μ||² = 3, Tr(I + 4I − 2·2I) = 3: FID 6 for these two Gaussians.
    assert frechet_distance(a, b) == pytest.approx(6.0, abs=0.3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
