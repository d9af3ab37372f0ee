"""The demo's fallback sample (no ../shared): a real face photo animated, with a voice-like track."""

from __future__ import annotations

import av

from emokit import sample
from emokit.data.ingest import ingest


def test_fallback_sample_is_ingestable(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "SHARED_DATA", tmp_path / "absent")
    videos, portrait, audio, desc = sample.sample_inputs(tmp_path / "work")
    assert "absent" in desc and portrait.exists() and audio.exists()
    with av.open(str(videos[0])) as c:
        assert c.streams.video and c.streams.audio
        assert abs(float(c.streams.video[0].duration * c.streams.video[0].time_base) - 6.0) < 0.1
    summary = ingest(videos, tmp_path / "ds", workers=1, progress=False)
    assert summary.clips == 1 and not summary.rejected
