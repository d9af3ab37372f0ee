"""The metrics of `emokit evaluate` that need networks the user passes: Sync-C/D, FID, FVD, CSIM.

Each fills its fields of the report; one it cannot compute (too few frames, no audio) stays None
with a note saying why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from einops import rearrange

from emokit.evaluate.features import (
    ARCFACE_SIZE,
    I3D_FRAMES,
    I3D_SIZE,
    INCEPTION_SIZE,
    cosine_similarity,
    embed,
    frechet_distance,
    to_input,
)

__all__ = ["weighted_metrics"]


def weighted_metrics(
    report, nets: dict, gen, ref, g_marks, r_marks, speech, gen_path: Path, g0: float, n: int
) -> None:
    """Fill ``report``'s weighted metrics for the networks in ``nets``."""
    from emokit.evaluate.report import face_crops

    if "syncnet" in nets:
        from emokit.data.syncnet import SyncNetError, at_sync_fps, sync_score

        net = nets["syncnet"]
        if speech is None:
            report.notes.append("Sync-C/D: no audio to score")
        else:
            idx = at_sync_fps(n, report.fps)
            mouths = face_crops(gen[idx], [g_marks[i] for i in idx], net.config.size, lower=True)
            try:
                s = sync_score(net, mouths, speech)
                report.sync_c, report.sync_d, report.sync_offset_frames = (
                    s.confidence,
                    s.distance,
                    s.offset_frames,
                )
            except SyncNetError as e:
                report.notes.append(f"Sync-C/D: {e}")
    if "inception" in nets:
        a = embed(nets["inception"], to_input(gen, INCEPTION_SIZE), "inception")
        b = embed(nets["inception"], to_input(ref, INCEPTION_SIZE), "inception")
        report.fid = frechet_distance(a, b)
    if "i3d" in nets:
        clips = n // I3D_FRAMES
        if clips < 2:
            report.notes.append(f"FVD: needs at least {2 * I3D_FRAMES} frames, got {n}")
        else:

            def clip_feats(frames):
                x = to_input(frames[: clips * I3D_FRAMES], I3D_SIZE)
                x = rearrange(x, "(n t) c h w -> n c t h w", t=I3D_FRAMES)
                return embed(nets["i3d"], x, "i3d", batch=2)

            report.fvd = frechet_distance(clip_feats(gen), clip_feats(ref))
    if "arcface" in nets:
        first = next((i for i, p in enumerate(r_marks) if p is not None), None)
        if first is None or all(p is None for p in g_marks):
            report.notes.append("CSIM: no face found in the reference or the generated video")
        else:
            faces = face_crops(gen, g_marks, ARCFACE_SIZE, lower=False)
            found = np.array([p is not None for p in g_marks])
            target = face_crops(ref[first : first + 1], r_marks[first : first + 1], ARCFACE_SIZE, lower=False)
            emb = embed(nets["arcface"], to_input(faces[found], ARCFACE_SIZE), "arcface")
            t = embed(nets["arcface"], to_input(target, ARCFACE_SIZE), "arcface")[0]
            report.csim = float(cosine_similarity(emb, t).mean())
