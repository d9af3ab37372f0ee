"""EMOPipeline: diffusers folders that load with diffusers' own classes and sample bit-equal frames.

A tiny random EMOModel (its zero-initialised output layers given weights so every part acts on the
frames) is saved as a pipeline, loaded back through ``EMOPipeline.from_pretrained`` and through each
component's diffusers class; a real portrait and real speech drive both the in-memory Generator and
the loaded pipeline with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from emokit.config import LabelConfig
from emokit.data.wav2vec import AudioEncoder, save_tiny_wav2vec
from emokit.generate.generator import Generator, Speech
from emokit.generate.portrait import load_portrait
from emokit.models import EMOConfig, EMOModel
from emokit.models.audio_proj import AudioProjection
from emokit.models.face_locator import FaceLocator
from emokit.models.parts import COMPONENTS, EMOBackbone, split_model
from emokit.models.pixel_latent import PixelLatent
from emokit.models.speed import SpeedEncoder
from emokit.pipeline import EMOPipeline, PipelineLoadError
from emokit.train.noise import training_scheduler

L, D, SIZE = 2, 32, 64  # save_tiny_wav2vec: 2 layers x 32
F, N = 4, 2


def _model(config: EMOConfig) -> EMOModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = EMOModel(dataclasses.replace(config, audio_layers=L, audio_dim=D)).eval()
        with torch.no_grad():  # zero-initialised layers (face locator, audio, temporal, speed) act
            for name, p in m.named_parameters():
                if not p.any():
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[EMOModel, Path, Path]:
    model = _model(EMOConfig.tiny())
    folder = tmp_path_factory.mktemp("pipe") / "emo"
    EMOPipeline.from_model(model, training_scheduler(), trained_stage=3).save_pretrained(folder)
    return model, folder, save_tiny_wav2vec(tmp_path_factory.mktemp("w2v"))


def _inputs(portraits: Path, audio_dir: Path):
    portrait = load_portrait(portraits / "woman_frontal.jpg", size=SIZE)
    speech = Speech.load(audio_dir / "speech_en_8s_16k_stereo.wav")
    return portrait, dataclasses.replace(speech, frames=F + 3)  # two clips, the second cut short


def test_loaded_pipeline_renders_the_generators_frames_bit_equal(saved, portraits, audio_dir, tmp_path):
    model, folder, w2v = saved
    portrait, speech = _inputs(portraits, audio_dir)
    alphas = training_scheduler().alphas_cumprod
    lab = LabelConfig()  # the wav2vec settings Generator(run) and the pipeline both load with
    encoder = AudioEncoder(
        w2v, chunk_s=lab.audio_chunk_s, overlap_s=lab.audio_overlap_s, precision=lab.audio_precision
    )
    gen = Generator.from_parts(model, alphas, encoder, frames=F, motion_frames=N, progress=False)
    expected = list(gen.render(portrait, speech, steps=2, cfg=2.5, seed=7, speed=1.0))

    pipe = EMOPipeline.from_pretrained(folder, audio_model=str(w2v))  # loaded on the first call
    assert pipe.config.audio_model == str(w2v)
    got = list(pipe.frames(portrait, speech, 2, 2.5, 7, 1.0, frames=F, motion_frames=N, progress=False))
    assert len(got) == len(expected) == F + 3
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert np.std(np.stack(got).astype(np.float32)) > 1.0  # not a constant picture
    other = list(pipe.frames(portrait, speech, 2, 2.5, 8, 1.0, frames=F, motion_frames=N, progress=False))
    assert not all(np.array_equal(a, b) for a, b in zip(got, other))  # the seed matters

    result = pipe(portrait, speech, tmp_path / "out.mp4", 1, 1.0, frames=F, motion_frames=N, progress=False)
    assert result.frames == F + 3 and (tmp_path / "out.mp4").stat().st_size > 0


def test_each_component_folder_loads_with_its_own_class(saved):
    model, folder, _ = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "EMOPipeline" and index["trained_stage"] == 3
    assert index["reference_net"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["backbone"] == ["emokit.models.parts", "EMOBackbone"]
    state = model.state_dict()

    def same(part: torch.nn.Module, prefixes: dict[str, str]) -> bool:
        loaded = part.state_dict()
        return bool(loaded) and all(
            torch.equal(t, state[name.replace(src, dst, 1)])
            for name, t in loaded.items()
            for src, dst in prefixes.items()
            if name.startswith(src)
        )

    assert same(UNet2DConditionModel.from_pretrained(folder / "reference_net"), {"": "reference_net."})
    assert same(AutoencoderKL.from_pretrained(folder / "vae"), {"": "vae."})
    backbone = EMOBackbone.from_pretrained(folder / "backbone")
    assert same(backbone, {"unet.": "backbone.", "temporal.": "temporal."})
    assert len(backbone.state_dict()) == sum(k.startswith(("backbone.", "temporal.")) for k in state)
    for name, cls in (("face_locator", FaceLocator), ("audio_proj", AudioProjection)):
        assert same(cls.from_pretrained(folder / name), {"": f"{name}."})
    assert same(SpeedEncoder.from_pretrained(folder / "speed_encoder"), {"": "speed_encoder."})
    ddim = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert torch.equal(ddim.alphas_cumprod, training_scheduler().alphas_cumprod)
    half = EMOPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)  # diffusers' dtype option
    assert half.backbone.dtype == half.reference_net.dtype == torch.bfloat16
    assert half.model.backbone is half.backbone.unet  # joined, not copied


def test_pixel_latent_pipeline_round_trips(tmp_path):
    model = _model(EMOConfig.tiny_face())
    EMOPipeline.from_model(model, training_scheduler("v_prediction")).save_pretrained(tmp_path / "p")
    assert PixelLatent.from_pretrained(tmp_path / "p" / "vae").patch == 4
    pipe = EMOPipeline.from_pretrained(tmp_path / "p")
    unused = {f: getattr(EMOConfig(), f) for f in ("vae_block_out_channels", "vae_layers_per_block")}
    unused["vae_norm_num_groups"] = EMOConfig().vae_norm_num_groups  # a KL VAE's sizes: not stored
    assert pipe.model.config == dataclasses.replace(model.config, **unused)
    loaded, own = pipe.model.state_dict(), model.state_dict()
    assert set(loaded) == set(own) and all(torch.equal(loaded[k], own[k]) for k in own)
    assert set(split_model(pipe.model)) == set(COMPONENTS)


def test_hub_id_offline_is_one_line_error_and_a_populated_cache_loads(saved, tmp_path):
    _, folder, _ = saved
    cache = tmp_path / "hub"
    with pytest.raises(PipelineLoadError, match="emokit-test/tiny-emo") as e:
        EMOPipeline.from_pretrained("emokit-test/tiny-emo", cache_dir=cache, local_files_only=True)
    assert "\n" not in str(e.value)

    # the layout huggingface_hub gives a downloaded repo: snapshots/<commit>/ named by refs/main
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--emokit-test--tiny-emo"
    EMOPipeline.from_pretrained(folder).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pipe = EMOPipeline.from_pretrained("emokit-test/tiny-emo", cache_dir=cache, local_files_only=True)
    assert torch.equal(
        pipe.backbone.unet.conv_in.weight, EMOPipeline.from_pretrained(folder).backbone.unet.conv_in.weight
    )


def test_not_a_pipeline_folder_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineLoadError) as e:
        EMOPipeline.from_pretrained(tmp_path / "empty")
    assert "\n" not in str(e.value)


def test_import_emokit_is_cheap_and_gives_the_api():
    """``import emokit`` loads no torch; the public names resolve to the library's functions, and
    ``emokit.train`` / ``emokit.evaluate`` stay functions after their packages are imported."""
    code = (
        "import sys, inspect, emokit\n"
        "assert 'torch' not in sys.modules, 'import emokit loaded torch'\n"
        "import emokit.train.checkpoint, emokit.evaluate.report\n"
        "assert callable(emokit.train) and callable(emokit.evaluate), (emokit.train, emokit.evaluate)\n"
        "for name in ('ingest', 'label', 'train', 'evaluate'):\n"
        "    f = getattr(emokit, name)\n"
        "    sig = inspect.signature(f)\n"
        "    assert f.__doc__ and sig.return_annotation is not sig.empty, name\n"
        "assert emokit.EMOPipeline.__name__ == 'EMOPipeline'\n"
        "from emokit.train import checkpoint\n"
        "print('ok')\n"
    )
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert (root / "emokit" / "py.typed").is_file()
