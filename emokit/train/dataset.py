"""Training samples from label shards: an index built from label-only reads, media decoded lazily.

The index reads only LABEL_COLUMNS, so opening a thousand-shard dataset costs seconds, not a full
read of the mp4 bytes. DataLoader workers then fetch one clip's mp4 + audio tokens and decode just
the frames a sample needs. A sample is a pure function of (seed, sample number): the same run, or a
resumed one, sees the same frames in the same order without saving any loader state.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler

from emokit.data.schema import OK, read_table
from emokit.models.window import context_rows

# What the index needs per clip (a subset of LABEL_COLUMNS: no per-frame boxes or poses).
_INDEX_COLUMNS = [
    "clip_id",
    "status",
    "fps",
    "num_frames",
    "size",
    "has_audio",
    "face_mask_box",
    "velocity",
    "audio_shape",
    "flags",
]
_MEDIA_COLUMNS = ["video_mp4", "audio_embeddings"]
_MAX_RETRIES = 8


class DatasetError(ValueError):
    """The dataset cannot feed this training stage (missing shards, nothing usable)."""


class ClipError(ValueError):
    """One clip's media is unusable (undecodable mp4, too few frames, bad audio tokens)."""


@dataclass(frozen=True)
class Clip:
    """Where one usable clip lives and the labels a sample needs from it."""

    shard: Path
    row_group: int
    row: int  # row inside its row group
    clip_id: str
    fps: int
    num_frames: int
    size: int  # crop side in pixels (face_mask_box is in these pixels)
    face_mask_box: tuple[float, float, float, float]
    velocity: np.ndarray  # [num_frames] deg/frame (stage 3 requires it; may be empty before)
    audio_shape: tuple[int, int, int] | None


@dataclass
class IndexSummary:
    """What the index kept and why it left the rest out (printed by `emokit train`)."""

    shards: int = 0
    rows: int = 0
    rejected: int = 0  # status != ok (label already rejected them)
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> clips
    usable: int = 0


def find_shards(dataset: str | Path) -> list[Path]:
    """Shard files of a dataset folder (DATASET/shards/*.parquet) or of a shards folder itself."""
    root = Path(dataset)
    if root.is_file() and root.suffix == ".parquet":
        return [root]
    folder = root / "shards" if (root / "shards").is_dir() else root
    shards = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not shards:
        raise DatasetError(f"no label shards in {folder} (run `emokit label {root}` first)")
    return shards


def index_clips(
    dataset: str | Path,
    stage: int,
    frames: int,
    motion_frames: int,
    drop_flags: Sequence[str] = (),
) -> tuple[list[Clip], IndexSummary]:
    """Usable clips for ``stage`` in shard order, with counts of what the recipe filtered out.

    Stage 1 needs any ok clip; stages 2-3 also need audio tokens and ``motion_frames + frames``
    frames, since they train on contiguous windows with audio.
    """
    need = 1 if stage == 1 else frames + motion_frames
    drop = set(drop_flags)
    clips: list[Clip] = []
    s = IndexSummary()
    for shard in find_shards(dataset):
        s.shards += 1
        table = read_table(shard, columns=_INDEX_COLUMNS).to_pylist()
        s.rows += len(table)
        groups = pq.ParquetFile(shard).metadata
        starts = np.cumsum([0] + [groups.row_group(i).num_rows for i in range(groups.num_row_groups)])
        for i, r in enumerate(table):
            if r["status"] != OK:
                s.rejected += 1
                continue
            flagged = sorted(drop.intersection(r["flags"] or []))
            no_audio = not r["has_audio"] or not r["audio_shape"] or "no_audio" in (r["flags"] or [])
            if flagged:
                s.dropped[f"flag {flagged[0]}"] += 1
            elif stage > 1 and no_audio:
                s.dropped["no audio"] += 1
            elif r["num_frames"] < need:
                s.dropped[f"shorter than {need} frames"] += 1
            elif stage == 3 and len(r["velocity"] or []) != r["num_frames"]:
                s.dropped["no per-frame velocity"] += 1
            else:
                g = int(np.searchsorted(starts, i, side="right") - 1)
                audio = r["audio_shape"]
                clips.append(
                    Clip(
                        shard=shard,
                        row_group=g,
                        row=i - int(starts[g]),
                        clip_id=r["clip_id"],
                        fps=int(r["fps"]),
                        num_frames=int(r["num_frames"]),
                        size=int(r["size"]),
                        face_mask_box=tuple(r["face_mask_box"]),
                        velocity=np.asarray(r["velocity"] or [], np.float32),
                        audio_shape=tuple(audio) if audio else None,
                    )
                )
    s.usable = len(clips)
    return clips, s


def decode_frames(
    mp4: bytes,
    indices: Sequence[int],
    fps: int,
    resolution: int,
    threads: int = 1,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Frames ``indices`` of a constant-fps mp4 as uint8 [len, res, res, 3], decoding only what's needed.

    Wanted frames are grouped into runs; each run seeks to the keyframe before its first frame and
    stops after its last. A frame more than one second (``fps`` frames: label's keyframe interval)
    after the previous wanted one starts a new run, so a reference far from the training window
    costs one keyframe interval, not the whole span between. Frame indices come from timestamps,
    so a seek that lands anywhere still yields the right frames. Resizing happens inside the
    pixel-format conversion (one swscale pass). ``threads``: decoder threads (DataLoader workers
    each own a core: 1, not FFmpeg's one-per-core default). ``stats["decoded"]`` counts frames.
    """
    wanted = sorted(set(indices))
    runs: list[list[int]] = [[wanted[0]]]
    for k in wanted[1:]:
        if k - runs[-1][-1] > fps:
            runs.append([k])
        else:
            runs[-1].append(k)
    got: dict[int, np.ndarray] = {}
    decoded = 0
    try:
        with av.open(io.BytesIO(mp4), mode="r") as container:
            vs = container.streams.video[0]
            vs.codec_context.thread_count = max(1, threads)
            if threads > 1:
                vs.thread_type = "AUTO"
            tb = float(vs.time_base or 0)  # emokit's clip mp4s always have one
            start = vs.start_time or 0
            for run in runs:
                if run[0] > 0 or decoded:
                    container.seek(start + int(run[0] / fps / tb), stream=vs, backward=True)
                for frame in container.decode(vs):
                    decoded += 1
                    if frame.pts is None:
                        raise ClipError("frame without a timestamp")
                    k = round((frame.pts - start) * tb * fps)
                    if k in run and k not in got:
                        got[k] = frame.to_ndarray(
                            format="rgb24", width=resolution, height=resolution, interpolation="AREA"
                        )
                    if k >= run[-1]:
                        break
    except av.FFmpegError as e:
        raise ClipError(f"cannot decode clip mp4: {e}") from None
    if stats is not None:
        stats["decoded"] = decoded
    missing = [k for k in wanted if k not in got]
    if missing:
        raise ClipError(f"mp4 lacks frame(s) {missing[:3]} (decoded {len(got)} of {len(wanted)})")
    return np.stack([got[k] for k in indices])


def face_mask(box: Sequence[float], crop_size: int, resolution: int) -> torch.Tensor:
    """EMO's face-region mask [1, res, res]: 1 inside the clip's union face box, 0 elsewhere."""
    scale = resolution / crop_size
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    mask = torch.zeros(1, resolution, resolution)
    xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    xb, yb = min(resolution, int(np.ceil(x1))), min(resolution, int(np.ceil(y1)))
    mask[:, ya:yb, xa:xb] = 1.0
    return mask


def pixels_of(frames: np.ndarray) -> torch.Tensor:
    """uint8 [n, h, w, 3] → float [n, 3, h, w] in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _RowCache:
    """The last row group read, per worker process, reused while samples stay inside it.

    A Parquet read is per row group, so the cost of one sample is its whole group's media:
    shards written with small row groups make a sample read only its own clip.
    """

    def __init__(self, columns: Sequence[str] = tuple(_MEDIA_COLUMNS)) -> None:
        self.key: tuple[Path, int] | None = None
        self.table: pa.Table | None = None
        self.columns = list(columns)  # a subset of _MEDIA_COLUMNS (cached latents: no video)

    def get(self, clip: Clip) -> tuple[bytes | None, bytes | None]:
        key = (clip.shard, clip.row_group)
        if key != self.key or self.table is None:
            try:  # page checksums: a shard damaged on disk is a bad clip naming its file, not garbage
                pf = pq.ParquetFile(clip.shard, page_checksum_verification=True)
                self.table = pf.read_row_group(clip.row_group, columns=self.columns)
            except (OSError, pa.ArrowException) as e:
                raise ClipError(f"{clip.shard}: corrupt row group {clip.row_group} ({e})") from None
            self.key = key
        video = None
        if "video_mp4" in self.columns:
            video = self.table.column("video_mp4")[clip.row].as_py()
            if not video:
                raise ClipError("no video_mp4 bytes")
        audio = None
        if "audio_embeddings" in self.columns:
            audio = self.table.column("audio_embeddings")[clip.row].as_py()
        return video, audio


def clip_media(clip: Clip, audio: bool = True) -> tuple[bytes, bytes | None]:
    """One clip's mp4 bytes (and audio token bytes when ``audio``), read from its shard."""
    video, tokens = _RowCache(_MEDIA_COLUMNS if audio else ["video_mp4"]).get(clip)
    assert video is not None  # the video column was asked for: get() raised if it is empty
    return video, tokens


class ClipDataset(Dataset):
    """Training samples; item ``k`` is global sample number k (see StepBatches), any k >= 0.

    Stage 1: {"frames" [1,3,H,W], "reference" [3,H,W], "face_mask" [1,H,W]}.
    Stages 2-3 add {"motion" [n,3,H,W], "audio" [f+2a,L,D] float32, "speed" [f+2s]} with f
    target frames that directly follow the n motion frames; audio and speed carry the clip's
    ±``audio_context``/``speed_context`` real neighbouring frames (the model's ±2-frame windows),
    repeated only past the clip's true ends. Pixels are in [-1, 1].

    ``latents`` (a reader of cached VAE moments, e.g. ``partial(latent_cache.load_moments,
    folder)``): samples carry "frames_moments", "reference_moments", "motion_moments"
    ([.., 2C, h, w]) instead of the pixels, and no mp4 is read or decoded.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        stage: int,
        resolution: int,
        frames: int = 12,
        motion_frames: int = 4,
        seed: int = 0,
        audio_context: int = 2,
        speed_context: int = 2,
        decode_threads: int = 1,
        latents: Callable[[Clip, Sequence[int]], torch.Tensor] | None = None,
    ) -> None:
        if not clips:
            raise DatasetError("no usable clips for this stage")
        self.clips = list(clips)
        self.stage = stage
        self.resolution = resolution
        self.frames = 1 if stage == 1 else frames
        self.motion_frames = 0 if stage == 1 else motion_frames
        self.seed = seed
        self.audio_context, self.speed_context = audio_context, speed_context
        self.decode_threads = decode_threads
        self._perm: tuple[int, np.ndarray] | None = None
        self.latents = latents
        columns = ["audio_embeddings"] if latents is not None else _MEDIA_COLUMNS
        self._rows = _RowCache(columns)

    def __len__(self) -> int:
        return len(self.clips)

    def clip_of(self, k: int) -> int:
        """Clip index of sample ``k``: each pass over the data is a fresh seeded permutation."""
        epoch, i = divmod(k, len(self.clips))
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(len(self.clips)))
        return int(self._perm[1][i])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | str]:
        index, reasons = self.clip_of(k), []
        for attempt in range(_MAX_RETRIES):
            rng = np.random.default_rng([self.seed, k, attempt, 7])
            try:
                return self._sample(self.clips[index], rng)
            except ClipError as e:  # one bad clip must not stop a long run: take another
                reasons.append(f"{self.clips[index].clip_id}: {e}")
                index = int(rng.integers(len(self.clips)))
        raise ClipError(f"{_MAX_RETRIES} clips in a row failed; last: {reasons[-1]}")

    def _sample(self, clip: Clip, rng: np.random.Generator) -> dict[str, torch.Tensor | str]:
        n, f, res = self.motion_frames, self.frames, self.resolution
        cached = self.latents is not None
        video, audio = (None, None) if cached and self.stage == 1 else self._rows.get(clip)
        start = int(rng.integers(0, clip.num_frames - (n + f) + 1))
        window = list(range(start, start + n + f))
        ref = int(rng.integers(clip.num_frames))
        if self.stage == 1 and clip.num_frames > 1:  # reference and target: two different frames
            ref = (start + 1 + int(rng.integers(clip.num_frames - 1))) % clip.num_frames
        if self.latents is not None:  # cached VAE moments, same frames: no mp4 decoded
            pixels, suffix = self.latents(clip, [*window, ref]), "_moments"
        else:
            assert video is not None
            pixels = pixels_of(decode_frames(video, [*window, ref], clip.fps, res, self.decode_threads))
            suffix = ""
        sample: dict[str, torch.Tensor | str] = {
            "clip_id": clip.clip_id,
            "frames" + suffix: pixels[n : n + f],
            "reference" + suffix: pixels[-1],
            "face_mask": face_mask(clip.face_mask_box, clip.size, res),
        }
        if self.stage > 1:
            sample["motion" + suffix] = pixels[:n]
            a, v = self.audio_context, self.speed_context
            sample["audio"] = audio_tokens(audio, clip.audio_shape, start + n - a, f + 2 * a)
            rows = context_rows(start + n, f, v, len(clip.velocity))
            if rows is None:  # stage 2 does not use speed; keep the batch shape uniform
                speed = np.zeros(f + 2 * v, np.float32)
            else:
                speed = clip.velocity[rows]
            sample["speed"] = torch.from_numpy(speed)
        return sample


def audio_tokens(
    blob: bytes | None, shape: tuple[int, int, int] | None, start: int, count: int
) -> torch.Tensor:
    """Audio tokens of frames [start, start+count) as float32 [count, L, D]; rows before 0 or past
    the last token repeat the first/last one (``start`` may be negative: a clip's context).

    Wav2vec alignment can come out a frame short of the video; repeating the last token is the
    least surprising fill for that frame.
    """
    if blob is None or shape is None:
        raise ClipError("no audio embeddings")
    frames, layers, dim = shape
    if len(blob) != frames * layers * dim * 2:
        raise ClipError(
            f"audio_embeddings has {len(blob)} bytes, audio_shape {tuple(shape)} needs "
            f"{frames * layers * dim * 2}"
        )
    tokens = np.frombuffer(blob, dtype="<f2").reshape(frames, layers, dim)
    rows = np.clip(np.arange(start, start + count), 0, frames - 1)
    return torch.from_numpy(tokens[rows].astype(np.float32))


class StepBatches(Sampler[list[int]]):
    """Endless batches of global sample numbers, from ``start_step`` on, for one rank.

    Step s on rank r takes samples (s·world + r)·batch … +batch−1, so ranks never overlap and a
    resumed run continues exactly where the checkpoint left off.
    """

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start_step, self.rank, self.world = batch_size, start_step, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            first = (step * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            step += 1
