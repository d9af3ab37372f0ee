"""emokit.data.wav2vec with a tiny random Wav2Vec2 saved and loaded through the real code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emokit.data.audio import load_audio
from emokit.data.wav2vec import AudioEncoder, AudioModelError, base_size_wav2vec, save_tiny_wav2vec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_wav2vec(tmp_path_factory.mktemp("tiny_wav2vec"))


@pytest.fixture(scope="module")
def speech(audio_dir: Path) -> np.ndarray:
    return load_audio(audio_dir / "speech_60s_16k_mono.wav")


def _reference(model_dir: Path, wav: np.ndarray, num_frames: int, fps: float = 30) -> np.ndarray:
    """The plain transformers pipeline on the whole clip, tokens interpolated at frame centres."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    net = Wav2Vec2Model.from_pretrained(model_dir).eval()
    inputs = fe(wav, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        hs = net(inputs.input_values, output_hidden_states=True).hidden_states
    states = torch.stack(hs[1:])[:, 0].numpy()  # [L, T, D]
    token_t = (np.arange(states.shape[1]) * 320 + 200) / 16000
    frame_t = (np.arange(num_frames) + 0.5) / fps
    out = np.empty((num_frames, states.shape[0], states.shape[2]))
    for layer in range(states.shape[0]):
        for d in range(states.shape[2]):
            out[:, layer, d] = np.interp(frame_t, token_t, states[layer, :, d])
    return out


def test_tiny_model_says_it_is_random(tiny: Path) -> None:
    config = json.loads((tiny / "config.json").read_text())
    assert config["emokit_random_init"] is True and "random" in config["emokit_note"]
    assert (tiny / "preprocessor_config.json").is_file()
    assert AudioEncoder(tiny).random_init


def test_one_chunk_matches_the_transformers_pipeline(tiny: Path, speech: np.ndarray) -> None:
    wav = speech[16000 * 3 : 16000 * 7]  # 4 s of real speech, 120 frames
    ours = AudioEncoder(tiny)(wav, 120)
    ref = _reference(tiny, wav, 120)
    assert ours.shape == (120, 2, 32) and ours.dtype == np.float16
    np.testing.assert_allclose(ours.astype(np.float64), ref, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    ("seconds", "num_frames"),
    [(1.0, 30), (2.37, 71), (0.01, 1), (3.0, 0), (1.0, 45), (5.0, 30), (0.5, 3)],
)
def test_one_token_per_frame_for_any_length(tiny: Path, speech: np.ndarray, seconds, num_frames) -> None:
    enc = AudioEncoder(tiny, chunk_s=2.0, overlap_s=0.5)
    out = enc(speech[: round(seconds * 16000)], num_frames)
    assert out.shape == (num_frames, 2, 32) and out.dtype == np.float16
    assert np.isfinite(out.astype(np.float32)).all()


def test_layer_selection(tiny: Path, speech: np.ndarray) -> None:
    wav = speech[:32000]
    every = AudioEncoder(tiny, layers="all")(wav, 60)
    last = AudioEncoder(tiny, layers="-1")(wav, 60)
    first_last = AudioEncoder(tiny, layers=[1, 2])(wav, 60)
    with_cnn = AudioEncoder(tiny, layers="0,2")(wav, 60)
    np.testing.assert_array_equal(last[:, 0], every[:, 1])
    np.testing.assert_array_equal(first_last, every)
    np.testing.assert_array_equal(with_cnn[:, 1], every[:, 1])
    assert not np.array_equal(with_cnn[:, 0], every[:, 0])
    for bad in ("3", "-4", "six", ""):
        with pytest.raises(ValueError):
            AudioEncoder(tiny, layers=bad)


def test_chunked_60s_matches_one_pass(tiny: Path, speech: np.ndarray) -> None:
    """60 s through 5 s chunks vs one pass over the whole minute.

    Hidden state 0 (CNN features + positional conv) has a local receptive field, so chunking must
    reproduce it exactly: that checks every chunk's offset, trimming and seam. Transformer layers
    attend over their whole chunk and can only be close, not equal.
    """
    frames = 1800
    whole = AudioEncoder(tiny, layers="0,1,2", chunk_s=1000)(speech, frames).astype(np.float32)
    chunked = AudioEncoder(tiny, layers="0,1,2", chunk_s=5.0, overlap_s=1.0)(speech, frames)
    chunked = chunked.astype(np.float32)
    np.testing.assert_allclose(chunked[:, 0], whole[:, 0], atol=2e-3)
    whole, chunked = whole[:, 1:], chunked[:, 1:]
    cos = (whole * chunked).sum(-1) / np.linalg.norm(whole, axis=-1) / np.linalg.norm(chunked, axis=-1)
    assert cos.min() > 0.99
    seams = np.arange(150, frames, 150)  # 5 s = 150 frames
    jump = np.linalg.norm(np.diff(chunked, axis=0), axis=-1)
    assert jump[seams - 1].mean() < 2 * np.median(jump)  # no step at chunk boundaries


def test_batched_chunks_equal_one_by_one(tiny: Path, speech: np.ndarray) -> None:
    wav = speech[: 16000 * 12]
    one = AudioEncoder(tiny, chunk_s=2.0, batch_size=1)(wav, 360)
    many = AudioEncoder(tiny, chunk_s=2.0, batch_size=4)(wav, 360)
    np.testing.assert_allclose(one.astype(np.float32), many.astype(np.float32), atol=2e-3)


def test_tokens_follow_the_audio_in_time(tiny: Path, speech: np.ndarray) -> None:
    """A clip starting 1 s into the file gets the tokens the file has at the same instants."""
    enc = AudioEncoder(tiny, layers=[0])
    enc.normalize = False  # per-clip loudness normalisation would differ between the two inputs
    whole = enc(speech[: 16000 * 10], 300)
    clip = enc(speech[16000 : 16000 * 10], 270)  # 1 s = 30 frames = 50 tokens: same token grid
    # Away from the clip's edges (positional conv reach) the local features coincide.
    np.testing.assert_allclose(clip[15:-15].astype(np.float32), whole[45:-15].astype(np.float32), atol=5e-2)
    off_by_one = np.abs(clip[15:-15].astype(np.float32) - whole[46:-14]).mean()
    assert off_by_one > 10 * np.abs(clip[15:-15].astype(np.float32) - whole[45:-15]).mean()


def test_missing_model_offline_names_the_flag(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache
    for model in ("facebook/wav2vec2-base-960h", str(tmp_path / "no_such_dir")):
        with pytest.raises(AudioModelError, match="--audio-model") as err:
            AudioEncoder(model)
        msg = str(err.value)
        assert "\n" not in msg and "local directory" in msg


def test_model_without_feature_extractor_is_refused(tiny: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        (partial / name).write_bytes((tiny / name).read_bytes())
    with pytest.raises(AudioModelError, match="--audio-model .* no preprocessor_config.json"):
        AudioEncoder(partial)


def test_base_size_model_has_wav2vec2_base_shape(tmp_path: Path, speech: np.ndarray) -> None:
    enc = AudioEncoder(base_size_wav2vec(tmp_path / "base"))
    assert enc.random_init and (enc.num_layers, enc.dim) == (12, 768)
    out = enc(speech[:16000], 30)
    assert out.shape == (30, 12, 768)


@pytest.mark.parametrize(
    "norm, stable, head, safetensors",
    [
        ("group", False, "Wav2Vec2Model", True),  # wav2vec2-base layout
        ("layer", True, "Wav2Vec2ForCTC", False),  # large-lv60 layout, a CTC checkpoint, .bin weights
        ("layer", False, "Wav2Vec2Model", True),
    ],
)
def test_own_network_matches_transformers_hidden_states(tmp_path, speech, norm, stable, head, safetensors):
    import transformers

    from emokit.data.wav2vec_net import Wav2Vec2Config, Wav2Vec2Net, load_weights, resolve_files

    cfg = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        do_stable_layer_norm=stable,
        conv_bias=True,
        vocab_size=12,
    )
    torch.manual_seed(0)
    hf = getattr(transformers, head)(cfg).eval()
    hf.save_pretrained(tmp_path)
    if not safetensors:  # older hub checkpoints ship only a pickled state dict
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    config_file, _, weights = resolve_files(str(tmp_path), local_only=True)
    assert weights.name == ("model.safetensors" if safetensors else "pytorch_model.bin")
    ours = Wav2Vec2Net(Wav2Vec2Config.from_json(config_file)).eval()
    ours.load_hf_state_dict(load_weights(weights))
    x = torch.from_numpy(speech[None, 16000 : 16000 * 3].copy())
    with torch.inference_mode():
        ref = getattr(hf, "wav2vec2", hf)(x, output_hidden_states=True).hidden_states
        got = ours(x)
    assert got.shape[0] == len(ref) == 3
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    assert ours.output_tokens(x.shape[1]) == got.shape[2]


def test_bf16_tokens_stay_close_to_fp32(tiny: Path, speech: np.ndarray) -> None:
    wav = speech[16000 * 3 : 16000 * 7]
    full = AudioEncoder(tiny, precision="fp32")(wav, 120).astype(np.float32)
    half = AudioEncoder(tiny, precision="bf16")(wav, 120).astype(np.float32)
    cos = (full * half).sum(-1) / (np.linalg.norm(full, axis=-1) * np.linalg.norm(half, axis=-1))
    assert cos.min() > 0.99 and not np.array_equal(full, half)
    with pytest.raises(ValueError, match="precision"):
        AudioEncoder(tiny, precision="int8")


def _save_other(kind: str, directory: Path, tiny: Path) -> Path:
    """A tiny random HuBERT or WavLM saved by transformers, with wav2vec2's feature extractor."""
    import transformers

    config_cls, model_cls = {
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
    }[kind]
    kw = json.loads((tiny / "config.json").read_text())
    shape = {
        k: kw[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    }
    conv = {k: kw[k] for k in ("conv_dim", "conv_stride", "conv_kernel", "conv_bias", "feat_extract_norm")}
    pos = {k: kw[k] for k in ("num_conv_pos_embeddings", "num_conv_pos_embedding_groups")}
    model_cls(config_cls(**shape, **conv, **pos)).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_bytes((tiny / "preprocessor_config.json").read_bytes())
    return directory


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_other_model_types_are_refused_in_one_line(tiny: Path, tmp_path: Path, kind: str) -> None:
    model = _save_other(kind, tmp_path / kind, tiny)
    with pytest.raises(AudioModelError, match=f"model_type '{kind}' is not implemented") as err:
        AudioEncoder(model)
    assert "\n" not in str(err.value)


def test_weights_the_network_lacks_are_refused_not_dropped(tiny: Path, tmp_path: Path) -> None:
    """WavLM weights under a config that claims wav2vec2: a strict load refuses them."""
    model = _save_other("wavlm", tmp_path / "wavlm", tiny)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "wav2vec2"}))
    with pytest.raises(AudioModelError, match="weights this Wav2Vec2 lacks"):
        AudioEncoder(model)


def test_tokens_streamed_clip_by_clip_equal_the_up_front_ones(tiny: Path, speech: np.ndarray) -> None:
    """`AudioEncoder.stream` (what generation uses, clip by clip with ±2 context rows) gives the
    tokens of the up-front call, computing each chunk once and holding at most two."""
    from emokit.models.window import context_rows

    wav, frames = speech[: 16000 * 20], 600
    enc = AudioEncoder(tiny, chunk_s=3.0, overlap_s=1.0, batch_size=4)  # 7 chunks
    whole = enc(wav, frames).astype(np.float32)
    stream = enc.stream(wav, frames)
    assert len(stream) == frames
    calls, forward = [], enc._forward
    enc._forward = lambda batch: calls.append(batch.shape) or forward(batch)  # type: ignore[method-assign]
    held = 0
    for first in range(0, frames, 12):
        rows = context_rows(first, 12, 2, frames)
        np.testing.assert_allclose(stream[rows].astype(np.float32), whole[rows], atol=2e-3)
        held = max(held, len(stream._chunks))
    assert len(calls) == 7 and held <= 2  # every chunk computed once, memory bounded
    with pytest.raises(IndexError):
        stream[[frames]]
