"""`python -m schemas bigquery KIND` prints a BigQuery schema for every output schema."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from schemas import SCHEMAS, bigquery_schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_schema_has_a_bigquery_schema(kind):
    out = subprocess.run([sys.executable, "-m", "schemas", "bigquery", kind], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    fields = {f["name"]: f for f in json.loads(out)}
    assert list(fields) == SCHEMAS[kind].names
    for field in SCHEMAS[kind]:
        bq = fields[field.name]
        if pa.types.is_list(field.type):
            assert bq["mode"] == "REPEATED"
        if pa.types.is_boolean(field.type):
            assert bq["type"] == "BOOLEAN"


def test_boolean_columns_map_to_boolean():
    schema = pa.schema([pa.field("looped", pa.bool_(), nullable=True)])
    assert bigquery_schema(schema) == [{"name": "looped", "type": "BOOLEAN", "mode": "NULLABLE"}]
