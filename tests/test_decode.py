"""emokit.data.decode on the real clips in shared/data (SOURCES.md gives the expected facts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from emokit.data.decode import VideoError, frame_times, read_frames, read_video_frames


def _all_frames(path: Path, stream_index: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reference: every frame decoded straight with PyAV, times on the container clock."""
    with av.open(str(path)) as c:
        s = c.streams.video[0] if stream_index is None else c.streams[stream_index]
        origin = (c.start_time or 0) / 1e6
        out = [(float(f.pts * f.time_base) - origin, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    return np.array([t for t, _ in out]), [a for _, a in out]


def _expected_indices(times: np.ndarray, start: float, n: int, fps: float) -> np.ndarray:
    """Sample-and-hold: the latest frame at or before each output time (first frame before it)."""
    t = start + np.arange(n) / fps
    return np.maximum(np.searchsorted(times, t + 1e-3, side="right") - 1, 0)


def test_vfr_window_is_sample_and_hold(videos: Path) -> None:
    path = videos / "speaker_vfr_700.mp4"
    times, ref = _all_frames(path)
    start, end = 0.5, 5.5
    out = []
    for frame in read_frames(path, start, end, fps=30):
        out.append(frame.copy())
        frame[:] = 0  # a caller drawing on a frame must not change the next one (a repeat)
    assert len(out) == round((end - start) * 30) == 150
    idx = _expected_indices(times, start, len(out), 30)
    assert np.sum(np.diff(idx) == 0) > 10  # 67 ms source intervals show a source frame twice
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(out[k], ref[i], err_msg=f"output frame {k} is not source frame {i}")


def test_frame_times_match_a_full_decode(videos: Path) -> None:
    for name in [
        "speaker_vfr_700.mp4",
        "scene_cuts_multiface_2997fps.mp4",
        "speaker_d_25fps_410x412.mp4",
        "speaker_c_25fps_512.mp4",
        "head_turn_25fps_224.mp4",
    ]:
        fast = frame_times(videos / name)
        np.testing.assert_allclose(fast, frame_times(videos / name, decode=True), atol=1e-9)
        np.testing.assert_allclose(fast, _all_frames(videos / name)[0], atol=1e-9)
    vfr = frame_times(videos / "speaker_vfr_700.mp4")
    gaps = np.round(np.diff(vfr) * 1000).astype(int)
    assert len(vfr) == 135 and abs(vfr[0] - 0.033) < 1e-3
    assert (np.sum(gaps == 33), np.sum(gaps == 67)) == (86, 48)  # SOURCES.md: 86 of 33 ms, 48 of 67 ms
    cuts = frame_times(videos / "scene_cuts_multiface_2997fps.mp4")
    assert len(cuts) == 275 and abs(cuts[0] - 0.844) < 1e-3
    assert [round(cuts[i], 3) for i in (20, 82, 211)] == [1.511, 3.580, 7.884]  # the real cuts


def test_scene_window_starts_on_the_first_frame_after_the_cut(videos: Path) -> None:
    path = videos / "scene_cuts_multiface_2997fps.mp4"
    times, ref = _all_frames(path)
    out = list(read_frames(path, 3.580, 7.884))
    assert len(out) == round((7.884 - 3.580) * 30) == 129
    np.testing.assert_array_equal(out[0], ref[82])
    before = np.abs(out[0].astype(int) - ref[81]).mean()
    steps = {i: np.abs(ref[i + 1].astype(int) - ref[i]).mean() for i in range(70, 95)}
    assert max(steps, key=steps.get) == 81  # 81 -> 82 is the cut: the window starts after it
    assert before > 3 * np.median(list(steps.values()))
    idx = _expected_indices(times, 3.580, len(out), 30)
    assert idx[0] == 82 and idx[-1] <= 210  # all inside the shot: 211 is the next cut
    for k in (1, 64, 128):
        np.testing.assert_array_equal(out[k], ref[idx[k]])


def test_window_before_the_first_frame_holds_the_first_frame(videos: Path) -> None:
    path = videos / "scene_cuts_multiface_2997fps.mp4"  # video starts at 0.844 s
    times, ref = _all_frames(path)
    out = list(read_frames(path, 0.0, 1.2))
    assert len(out) == 36
    first_real = int(np.ceil(times[0] * 30 - 1e-3 * 30))  # first k with k/30 >= 0.844
    for k in range(first_real):
        np.testing.assert_array_equal(out[k], ref[0])
    idx = _expected_indices(times, 0.0, 36, 30)
    for k in range(36):
        np.testing.assert_array_equal(out[k], ref[idx[k]])


def test_25fps_to_30fps_repeats_every_fifth_frame(videos: Path) -> None:
    path = videos / "speaker_c_25fps_512.mp4"  # MPEG-4 part 2, 25 fps
    times, ref = _all_frames(path)
    out = list(read_frames(path, 2.0, 4.0))
    assert len(out) == 60
    idx = _expected_indices(times, 2.0, 60, 30)
    assert len(set(idx.tolist())) == 50
    np.testing.assert_array_equal(idx, 50 + np.floor(np.arange(60) * 25 / 30 + 1e-9).astype(int))
    for k in (0, 5, 6, 59):
        np.testing.assert_array_equal(out[k], ref[idx[k]])


def test_source_index_gives_the_hold_pattern_of_a_25fps_source(videos: Path) -> None:
    """Each 30 FPS frame names the 25 fps source frame it shows: floor(k·25/30), from the window's
    first frame on (the 1.0 s window starts on source frame 25, which is its index 0)."""
    for start in (0.0, 1.0):
        index: list[int] = []
        frames = list(
            read_video_frames(videos / "speaker_c_25fps_512.mp4", start, start + 2.0, 30, None, 1, index)
        )
        assert index == [(k * 25) // 30 for k in range(60)]
        # equal indices are the same decoded frame object: exactly the held frames
        assert [frames[k] is frames[k - 1] for k in range(1, 60)] == [
            a == b for a, b in zip(index[1:], index)
        ]
    index = []
    list(read_video_frames(videos / "talking_no_audio_30fps_720x1280.mp4", 0.5, 1.5, 30, None, 1, index))
    assert index == list(range(30))  # a 30 fps source has no holds


def test_audio_as_stream_zero(videos: Path) -> None:
    path = videos / "speaker_d_25fps_410x412.mp4"  # audio is stream 0, video stream 1
    out = list(read_frames(path, 1.0, 2.0))
    assert len(out) == 30 and out[0].shape == (412, 410, 3) and out[0].dtype == np.uint8
    same = list(read_frames(path, 1.0, 2.0, video_stream=1))
    np.testing.assert_array_equal(out[7], same[7])
    with pytest.raises(VideoError, match="stream 0 is audio"):
        read_frames(path, 1.0, 2.0, video_stream=0)


def _write(path: Path, frames: list[np.ndarray], degrees: float = 0, hflip: bool = False) -> None:
    """Lossless H.264 of the frames with a display-matrix rotation (as phones record)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"crf": "0", "preset": "ultrafast"})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv444p"
        if degrees or hflip:
            s.set_display_rotation(degrees, hflip=hflip)
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(s.encode(None))


@pytest.fixture(scope="module")
def clip_frames(videos: Path) -> list[np.ndarray]:
    frames = list(read_frames(videos / "speaker_d_25fps_410x412.mp4", 2.0, 2.2))
    return [f[60:300, 80:340] for f in frames]  # 240x260: not square, so turns are visible


@pytest.mark.parametrize(
    ("degrees", "hflip", "upright"),
    [
        (90, False, lambda a: np.rot90(a, 1)),  # stored turned clockwise: shown turned back
        (-90, False, lambda a: np.rot90(a, -1)),
        (180, False, lambda a: a[::-1, ::-1]),
        (90, True, lambda a: np.rot90(a, -1)[::-1]),
    ],
)
def test_rotation_metadata_is_applied(tmp_path: Path, clip_frames, degrees, hflip, upright) -> None:
    _write(tmp_path / "plain.mp4", clip_frames)
    _write(tmp_path / "turned.mp4", clip_frames, degrees, hflip)
    plain = list(read_frames(tmp_path / "plain.mp4", 0, 0.2))
    turned = list(read_frames(tmp_path / "turned.mp4", 0, 0.2))
    assert len(turned) == 6 and turned[0].shape[:2] == upright(plain[0]).shape[:2]
    for a, b in zip(plain, turned):
        np.testing.assert_array_equal(upright(a), b)
    # Independent check: ffmpeg's own autorotation of the first frame.
    raw = subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(tmp_path / "turned.mp4"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(turned[0].shape), turned[0])
    small = next(read_frames(tmp_path / "turned.mp4", 0, 0.1, max_width=120))
    assert (
        small.shape[1] == 120 and abs(small.shape[0] / 120 - turned[0].shape[0] / turned[0].shape[1]) < 0.02
    )


def test_max_width_downscales_in_the_decoder(videos: Path) -> None:
    path = videos / "speaker_b_30fps_1080x1920.mp4"
    full = list(read_frames(path, 10.0, 10.2))
    small = list(read_frames(path, 10.0, 10.2, max_width=270))
    assert len(small) == 6 and full[0].shape == (1920, 1080, 3) and small[0].shape == (480, 270, 3)
    pooled = full[3].reshape(480, 4, 270, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - small[3]).mean() < 2.0  # an area-filtered copy of the same frame


def test_errors_are_one_line_video_errors(videos: Path, audio_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        read_frames(tmp_path / "missing.mp4", 0, 1)
    with pytest.raises(VideoError, match="no video stream"):
        read_frames(audio_dir / "speech_en_8s_16k_stereo.wav", 0, 1)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="cannot open"):
        read_frames(tmp_path / "junk.mp4", 0, 1)
    with pytest.raises(VideoError, match="shorter than one frame"):
        read_frames(videos / "speaker_vfr_700.mp4", 1.0, 1.0)
    frames = read_frames(videos / "speaker_vfr_700.mp4", 5.5, 7.0)  # the video ends at 6.13 s
    with pytest.raises(VideoError, match="runs past the end of the video") as err:
        for _ in frames:
            pass
    assert "\n" not in str(err.value)
    # The last frame is held up to its end: a window to the stream's end time is fine.
    assert len(list(read_frames(videos / "speaker_vfr_700.mp4", 5.0, 6.13))) == round(1.13 * 30)
