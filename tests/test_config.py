"""The recipe file and the built-in defaults say the same thing; bad recipes fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from emokit.config import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_recipe_equals_defaults():
    assert load_recipe(ROOT / "pipelines" / "emo.toml") == Recipe()


def test_override_and_errors(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[ingest]\ndetector = "content"\nmax_clip_s = 10.0\n')
    r = load_recipe(f)
    assert r.ingest.detector == "content" and r.ingest.max_clip_s == 10.0
    assert r.label == Recipe().label
    f.write_text("[ingest]\nmax_clip = 10.0\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_recipe(f)
    f.write_text('[label]\nshard_size = "8"\n')
    with pytest.raises(ValueError, match="should be a int"):
        load_recipe(f)
    f.write_text("ingest = 3\n")
    with pytest.raises(ValueError, match="must be a table"):
        load_recipe(f)
    f.write_text("[ingestt]\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_recipe(f)
    with pytest.raises(ValueError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
