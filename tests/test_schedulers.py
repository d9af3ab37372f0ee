"""Sampling through diffusers schedulers: DDIM equals the hand-written sampler, the faster solvers
run, and a v-prediction run trains and samples (tiny preset, real media, the real train loop)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from emokit.cli import app
from emokit.config import TrainConfig
from emokit.generate.generator import GenerateError, Generator, Speech
from emokit.generate.portrait import load_portrait
from emokit.generate.sampler import SamplerError, ddim_sample, ddim_timesteps
from emokit.generate.schedulers import (
    STOCHASTIC,
    make_scheduler,
    schedule_config,
    scheduler_names,
    scheduler_sample,
)
from emokit.train.loop import train
from emokit.train.noise import load_scheduler, training_scheduler
from test_generate_video import one_torch_thread, short_wav
from train_shards import build_dataset

RUNS = [("epsilon", False), ("v_prediction", True), ("sample", True), ("v_prediction", False)]


def _toy(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic, t-dependent, non-linear stand-in for a network's output."""
    return torch.tanh(x * (1 + t / 500)) * 0.7 + 0.01 * t / 1000


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("kind", "zero_snr"), RUNS)
def test_ddim_scheduler_equals_ddim_sample(kind: str, zero_snr: bool) -> None:
    train_sched = training_scheduler(kind, zero_snr)
    x_T = _noise()
    ours = ddim_sample(_toy, x_T, ddim_timesteps(1000, 20), train_sched.alphas_cumprod, prediction_type=kind)
    # from the saved run config (Generator(run)) and from bare ᾱ (Generator.from_parts)
    for config in (train_sched.config, schedule_config(train_sched.alphas_cumprod, kind)):
        sched = make_scheduler("ddim", config, timestep_spacing="trailing")
        got = scheduler_sample(_toy, sched, x_T, 20)
        torch.testing.assert_close(got, ours, rtol=1e-5, atol=2e-5)
    assert not torch.allclose(ours, x_T)


def test_euler_at_zero_terminal_snr_is_ddim() -> None:
    """Euler starts at diffusers' σ_max = 4096 (ᾱ_T = 2^-24) for a zero-SNR run; with the
    σ-scaled noise and scale_model_input that is DDIM (Euler in σ space) up to 1/4096."""
    train_sched = training_scheduler("v_prediction", True)
    sched = make_scheduler("euler", train_sched.config)
    assert float(sched.init_noise_sigma) == pytest.approx(4096, rel=1e-3)
    x_T = _noise(1)
    ddim = scheduler_sample(_toy, make_scheduler("ddim", train_sched.config), x_T, 20)
    euler = scheduler_sample(_toy, sched, x_T, 20)
    assert torch.isfinite(euler).all()
    torch.testing.assert_close(euler, ddim, rtol=0, atol=2e-3)


def _gaussian_denoiser(kind: str, alphas_cumprod: torch.Tensor, mu: torch.Tensor, s: float):
    """The exact model for data x0 ~ N(mu, s²) per element: E[x0 | x_t] in closed form, returned
    as eps, v or x0. Its probability-flow ODE is known, so solver error can be measured."""
    ac = alphas_cumprod.to(torch.float64)

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        a = ac[t]
        x0 = mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x - a.sqrt() * mu)
        if kind == "sample":
            return x0
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    return denoise


@pytest.mark.parametrize(("kind", "zero_snr"), [("epsilon", False), ("v_prediction", True), ("sample", True)])
def test_solvers_converge_to_the_exact_ode_solution(kind: str, zero_snr: bool) -> None:
    """Every scheduler lands on the Gaussian's exact ODE solution as steps grow; DPM-Solver++ and
    UniPC are closer at 10 steps than DDIM (the speed-up they are for), on the run's own ᾱ."""
    train_sched = training_scheduler(kind, zero_snr)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    mu, s = torch.randn(x_T.shape, generator=g, dtype=torch.float64), 1.5
    a_T = train_sched.alphas_cumprod.double()[-1]  # sampling starts at t = T-1 (trailing)
    exact = mu + s * (x_T - a_T.sqrt() * mu) / (a_T * s**2 + 1 - a_T).sqrt()
    denoise = _gaussian_denoiser(kind, train_sched.alphas_cumprod, mu, s)
    err = {}
    solvers = [name for name in scheduler_names() if name not in STOCHASTIC]
    for name in solvers:
        for steps in (10, 100):
            sched = make_scheduler(name, train_sched.config, timestep_spacing="trailing")
            out = scheduler_sample(denoise, sched, x_T, steps)
            assert out.shape == x_T.shape and torch.isfinite(out).all()
            err[name, steps] = float((out - exact).abs().max())
    for name in solvers:
        assert err[name, 100] < 0.1 and err[name, 100] < 0.5 * err[name, 10], (name, err)
    for name in ("dpmpp", "unipc"):
        assert err[name, 10] < 0.7 * err["ddim", 10], (name, err)


@pytest.mark.parametrize(("kind", "zero_snr"), [("epsilon", False), ("v_prediction", True), ("sample", True)])
def test_ancestral_sampler_draws_from_the_data_distribution(kind: str, zero_snr: bool) -> None:
    """With the exact denoiser of x0 ~ N(mu, s²), ancestral DDPM's outputs have the data's mean and
    spread whatever the starting noise (the ODE solvers map x_T to x0 one to one instead), and the
    same seed gives the same draw. "fixed_small" variance under-disperses at few steps (std 0.82
    at 10); the error shrinks with the step count."""
    train_sched = training_scheduler(kind, zero_snr)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 2, 4, 64, 64, generator=g, dtype=torch.float64)  # 32768 draws
    mu, s = torch.randn(x_T.shape, generator=g, dtype=torch.float64), 1.5
    denoise = _gaussian_denoiser(kind, train_sched.alphas_cumprod, mu, s)
    sched = make_scheduler("ddpm", train_sched.config, timestep_spacing="trailing")
    draw = scheduler_sample(denoise, sched, x_T, 100, torch.Generator().manual_seed(1))
    z = (draw - mu) / s  # N(0, 1) if the draw is right
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.05, (float(z.mean()), float(z.std()))
    coarse = (scheduler_sample(denoise, sched, x_T, 10, torch.Generator().manual_seed(1)) - mu) / s
    assert abs(float(z.std()) - 1) < 0.5 * abs(float(coarse.std()) - 1), (float(z.std()), float(coarse.std()))
    ode = scheduler_sample(denoise, make_scheduler("ddim", train_sched.config), x_T, 100)
    z_ode = (ode - mu) / s

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    assert corr(z_ode, x_T) > 0.99 and corr(z, x_T) < 0.5, (corr(z_ode, x_T), corr(z, x_T))
    again = scheduler_sample(denoise, sched, x_T, 100, torch.Generator().manual_seed(1))
    other = scheduler_sample(denoise, sched, x_T, 100, torch.Generator().manual_seed(2))
    assert torch.equal(again, draw) and not torch.allclose(other, draw)


def test_scheduler_settings() -> None:
    zero = training_scheduler("sample", True).config
    assert zero.timestep_spacing == "leading"  # DDPM's default, saved with the run
    for name in scheduler_names():
        sched = make_scheduler(name, zero)
        sched.set_timesteps(10)
        assert round(float(sched.timesteps[0])) == 999  # trailing: starts at the pure-noise level
        assert sched.config.prediction_type == "sample"
    assert make_scheduler("dpmpp", zero).config.algorithm_type == "dpmsolver++"
    eps = training_scheduler().config
    leading = make_scheduler("ddim", eps)
    leading.set_timesteps(10)
    assert leading.timesteps.tolist()[0] == 901  # SD1.5's leading spacing with steps_offset 1
    with pytest.raises(SamplerError, match="unknown scheduler 'heun'"):
        make_scheduler("heun", eps)
    with pytest.raises(SamplerError, match="use 'trailing'"):
        make_scheduler("ddim", zero, timestep_spacing="leading")
    with pytest.raises(SamplerError, match="zero terminal SNR"):
        make_scheduler("unipc", zero, prediction_type="epsilon")


@pytest.fixture(scope="module")
def v_run(tmp_path_factory, videos):
    """A tiny v-prediction run, zero terminal SNR, trained 2 steps by the real train loop, and the
    tiny wav2vec its audio tokens match (2 layers x 32)."""
    from emokit.data.wav2vec import save_tiny_wav2vec

    root = tmp_path_factory.mktemp("v_run")
    ds = build_dataset(root / "ds", videos / "head_turn_25fps_224.mp4", 2, 32, extras=False)
    cfg = TrainConfig(
        max_steps=2,
        checkpoint_every=2,
        log_every=1,
        frames=4,
        motion_frames=2,
        lr=1e-3,
        prediction_type="v_prediction",
        zero_terminal_snr=True,
    )
    result = train(ds, root / "run", 1, cfg, workers=0, progress=False)
    return root / "run", save_tiny_wav2vec(root / "w2v"), result


def test_v_prediction_trains_and_samples_with_every_scheduler(v_run, portraits, audio_dir) -> None:
    run, w2v, result = v_run
    assert result.step == 2
    saved = load_scheduler(result.final)
    assert (saved.config.prediction_type, saved.config.rescale_betas_zero_snr) == ("v_prediction", True)
    portrait = load_portrait(portraits / "woman_frontal.jpg", size=64)
    speech = Speech.load(audio_dir / "speech_en_8s_16k_stereo.wav")
    speech = dataclasses.replace(speech, frames=7)  # two clips of 4
    videos = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = Generator(run, "cpu", w2v, frames=4, motion_frames=2, progress=False, scheduler="dpmpp")
        for name in scheduler_names():  # the run loaded once; the other solvers around its parts
            gen = loaded
            if name != "dpmpp":
                gen = Generator.from_parts(
                    loaded.model,
                    loaded.alphas_cumprod,
                    loaded.encoder,
                    frames=4,
                    motion_frames=2,
                    progress=False,
                    trained_stage=1,
                    prediction_type="v_prediction",
                    scheduler=name,
                )
            assert gen.prediction_type == "v_prediction"
            assert gen.scheduler.config.prediction_type == "v_prediction"
            frames = list(gen.render(portrait, speech, steps=3, cfg=1.5))
            assert len(frames) == 7 and frames[0].shape == (64, 64, 3)
            videos[name] = torch.from_numpy(frames[0]).float()
    finally:
        torch.set_num_threads(before)
    assert all(v.std() > 1 for v in videos.values())  # a picture, not a flat frame
    assert not torch.equal(videos["ddim"], videos["dpmpp"])  # the solver choice reaches render
    # a ready scheduler object is taken as is; one expecting another prediction type is refused
    with pytest.raises(GenerateError, match="unknown scheduler 'fast'"):
        Generator(run, "cpu", w2v, scheduler="fast")
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    eps_sched = make_scheduler("ddim", training_scheduler().config)
    with pytest.raises(GenerateError, match="expects prediction_type='epsilon'"):
        Generator.from_parts(
            gen.model, gen.alphas_cumprod, gen.encoder, prediction_type="v_prediction", scheduler=eps_sched
        )


def test_cli_scheduler_flag(v_run, portraits, audio_dir, tmp_path) -> None:
    run, w2v, _ = v_run
    audio = short_wav(audio_dir / "speech_en_8s_16k_stereo.wav", 0.3, tmp_path / "short.wav")
    common = ["generate", str(portraits / "woman_frontal.jpg"), str(audio), "--checkpoint", str(run)]
    common += ["--steps", "2", "--size", "64", "--audio-model", str(w2v), "--device", "cpu", "-q"]
    with one_torch_thread():
        r = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "u.mp4"), "--scheduler", "unipc"])
    assert r.exit_code == 0, r.output
    assert "u.mp4: 9 frames at 30 FPS" in r.stdout and "2 steps, cfg 3.5, seed 0, sampler unipc" in r.stdout
    bad = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "x.mp4"), "--scheduler", "heun"])
    assert bad.exit_code != 0 and not (tmp_path / "x.mp4").exists()
    assert "unknown scheduler 'heun' (use ddim, ddpm, dpmpp, unipc, euler)" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
