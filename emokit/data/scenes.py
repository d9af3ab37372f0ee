"""Scene detection: one decode pass over downscaled frames, PySceneDetect detectors, exact frame times.

We drive PySceneDetect's detectors ourselves instead of its VideoStream backends so that the same
pass also records every frame's presentation time (frame-accurate cuts on VFR input and on streams
that do not start at 0 s) and frames are downscaled inside the decoder, not after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode
from scenedetect.common import Timecode
from scenedetect.detector import SceneDetector

from emokit.config import IngestConfig
from emokit.data.probe import ProbeError, VideoInfo, container_origin_s

# Name → (factory, parameters recorded in the manifest). Add a detector by adding an entry.
DetectorFactory = Callable[[IngestConfig, float], tuple[SceneDetector, dict[str, Any]]]


def _adaptive(cfg: IngestConfig, fps: float) -> tuple[SceneDetector, dict[str, Any]]:
    params = {
        "adaptive_threshold": cfg.adaptive_threshold,
        "min_content_val": cfg.min_content_val,
        "min_scene_len_s": cfg.min_scene_len_s,
        "downscale_width": cfg.downscale_width,
    }
    det = AdaptiveDetector(
        adaptive_threshold=cfg.adaptive_threshold,
        min_content_val=cfg.min_content_val,
        min_scene_len=max(1, round(cfg.min_scene_len_s * fps)),
    )
    return det, params


def _content(cfg: IngestConfig, fps: float) -> tuple[SceneDetector, dict[str, Any]]:
    params = {
        "threshold": cfg.content_threshold,
        "min_scene_len_s": cfg.min_scene_len_s,
        "downscale_width": cfg.downscale_width,
    }
    det = ContentDetector(
        threshold=cfg.content_threshold, min_scene_len=max(1, round(cfg.min_scene_len_s * fps))
    )
    return det, params


DETECTORS: dict[str, DetectorFactory] = {"adaptive": _adaptive, "content": _content}


@dataclass
class SceneScan:
    """What one decode pass learned: frame times, cut frames, rotation."""

    frame_times: np.ndarray  # presentation time (s, container clock) of every frame, in order
    end_s: float  # time just after the last frame
    cuts: list[int]  # indices of frames that start a new scene
    rotation: int  # degrees from the display matrix
    detector: str
    params: dict[str, Any] = field(default_factory=dict)


def _scaled_size(width: int, height: int, target_w: int) -> tuple[int, int]:
    if width <= target_w:
        return width, height
    h = max(2, round(height * target_w / width / 2) * 2)
    return target_w, h


def scan_scenes(info: VideoInfo, cfg: IngestConfig) -> SceneScan:
    """Decode ``info``'s video once (downscaled) and return frame times and scene cuts."""
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown scene detector {cfg.detector!r}; choose from {sorted(DETECTORS)}")
    fps = info.fps if info.fps > 0 else 30.0
    detector, params = DETECTORS[cfg.detector](cfg, fps)
    rate = Fraction(fps).limit_denominator(100000)
    w, h = _scaled_size(info.width, info.height, cfg.downscale_width)
    times: list[float] = []
    durations: list[float] = []
    cut_times: list[FrameTimecode] = []
    by_pts: dict[tuple[int, Fraction], int] = {}
    rotation = 0
    error = None
    last_tc = None
    with av.open(info.path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        # Scene scores come from 256-wide copies: H.264/HEVC's in-loop deblocking is invisible
        # there and costs ~25 % of the decode, so this pass skips it.
        stream.codec_context.options = {"skip_loop_filter": "all"}
        scaler = VideoReformatter()  # one swscale context for the whole pass (~2 ms a frame saved)
        tb = Fraction(stream.time_base or 0)  # a video stream PyAV opened always has one
        origin = container_origin_s(container)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if not times:
                    rotation = int(frame.rotation or 0)
                t = float(frame.pts * tb) - origin
                if times and t <= times[-1]:
                    continue  # duplicate or out-of-order timestamp: keep time monotonic
                tc = FrameTimecode(Timecode(pts=frame.pts, time_base=tb), fps=rate)
                by_pts[(frame.pts, tb)] = len(times)
                times.append(t)
                durations.append(float(frame.duration * tb) if frame.duration else 0.0)
                small = scaler.reformat(
                    frame, width=w, height=h, format="bgr24", interpolation="FAST_BILINEAR"
                )
                img = small.to_ndarray()
                cut_times += detector.process_frame(tc, img)
                last_tc = tc
        except av.FFmpegError as e:
            error = e.strerror or type(e).__name__
    if not times:
        raise ProbeError(f"no decodable video frames ({error or 'empty stream'})")
    if last_tc is not None:
        cut_times += detector.post_process(last_tc)
    frame_times = np.asarray(times)
    step = durations[-1] or (float(np.median(np.diff(frame_times))) if len(times) > 1 else 1 / fps)
    end_s = times[-1] + step
    decoded = end_s - times[0]
    if info.duration_s > 0 and decoded < 0.9 * info.duration_s:
        why = f" ({error})" if error else ""
        raise ProbeError(f"truncated or corrupt: decoded {decoded:.2f} s of {info.duration_s:.2f} s{why}")
    cuts = sorted({by_pts[(int(c.pts), tb)] for c in cut_times if (int(c.pts), tb) in by_pts} - {0})
    return SceneScan(frame_times, end_s, cuts, rotation, cfg.detector, params)
