"""data_manifest.example.parquet is emokit's own output on the shared sample media, in sync."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emokit.data.schema import MANIFEST_SCHEMA, SCHEMA_VERSION, read_table
from emokit.demo import manifest_example

EXAMPLE = Path(__file__).resolve().parents[1] / "data_manifest.example.parquet"


def test_example_manifest_matches_schema():
    schema = pq.read_schema(EXAMPLE)
    assert schema.remove_metadata() == MANIFEST_SCHEMA
    assert schema.metadata[b"schema_version"].decode() == SCHEMA_VERSION


@pytest.mark.crossrun
def test_example_manifest_is_in_sync(shared_data, tmp_path):
    fresh = manifest_example(tmp_path / "example.parquet")
    assert read_table(fresh).to_pylist() == read_table(EXAMPLE).to_pylist(), (
        "data_manifest.example.parquet is stale: run `make manifest-example`"
    )
