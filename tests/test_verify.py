"""Count in, count out: row keys, the read rule, and `beam-i3d verify` on real shards."""

from __future__ import annotations

import csv

import pyarrow as pa
import pytest

from beam_i3d.cli import EXIT_OK, EXIT_RECONCILIATION, main
from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.results import read_table, settle
from beam_i3d.job.row_keys import assign_keys, content_identity, identities_of_key, row_key
from beam_i3d.job.shards import shard_name, write_table_atomically
from beam_i3d.job.verify import expected_rows, reconcile
from schemas import ERRORS_SCHEMA, SCORES_SCHEMA


def write_csv(path, rows, fields=("clip_id", "video_uri", "start_sec", "end_sec")):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def score(key, run, clip_id=None, label=None):
    return {"clip_id": clip_id or key, "video_uri": f"/v/{key}.mp4", "num_frames": 9,
            "predicted_label": "abseiling", "predicted_index": 0,
            "predicted_probability": 0.5, "label": label,
            "top_k": [{"label": "abseiling", "index": 0, "probability": 0.5, "logit": 1.0}],
            "logits": [1.0], "row_key": key, "run_id": run}


def error(key, run, error_type="CorruptVideo", stage="decode"):
    return {"clip_id": key, "video_uri": f"/v/{key}.mp4", "stage": stage,
            "error_type": error_type, "message": f"/v/{key}.mp4: broken", "source": "m:2",
            "row_key": key, "run_id": run}


def write_shard(out, kind, rows, run, writer="w", seq=0):
    schema = SCORES_SCHEMA if kind == "scores" else ERRORS_SCHEMA
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows],
                                 schema=schema)
    write_table_atomically(table, str(out / kind / shard_name(run, writer, seq)))


def test_row_keys_do_not_depend_on_path_or_position(tmp_path):
    rows = [{"clip_id": "x", "video_uri": "/v/a.mp4"},
            {"clip_id": "", "video_uri": "", "start_sec": "1"},       # bad, no identity
            {"clip_id": "", "video_uri": "/v/b.mp4", "start_sec": "2", "end_sec": "1"},
            {"clip_id": "x", "video_uri": "/v/other.mp4"},             # repeat of x
            {"clip_id": "", "video_uri": "/v/c.mp4", "start_sec": "0.5"}]
    first = expected_rows(write_csv(tmp_path / "m.csv", rows), ManifestOptions())
    # the same rows with one more bad row inserted above, read through another path
    (tmp_path / "sub").mkdir()
    moved = [{"clip_id": "", "video_uri": "", "end_sec": "zzz"}] + rows
    second = expected_rows(write_csv(tmp_path / "sub" / "m.csv", moved), ManifestOptions())
    keys1 = sorted(r.row_key for r in first)
    keys2 = sorted(r.row_key for r in second)
    assert len(keys1) == 5 and len(set(keys1)) == 5
    assert set(keys1) < set(keys2) and len(keys2) == 6
    assert "x" in keys1 and "x#repeat1" in keys1
    assert any(k.startswith("c.mp4#") for k in keys1)  # derived from URI and times
    assert content_identity({"a": "1"}) == content_identity({"a": "1"}) != content_identity(
        {"a": "2"})
    assert identities_of_key("x#repeat3") == ("x#repeat3", "x")
    assert identities_of_key("y") == ("y",)
    assert assign_keys("x", [3, 1, 2], order=lambda v: v) == [
        ("x", 1), (row_key("x", 1), 2), ("x#repeat2", 3)]


def test_settle_keeps_one_row_per_key(tmp_path):
    out = tmp_path / "out"
    write_shard(out, "scores", [score("a", "r1"), score("b", "r1")], "r1")
    write_shard(out, "scores", [score("a", "r1")], "r1", writer="retry")  # a retried bundle
    write_shard(out, "errors", [error("c", "r1", "DecodeTimeout"), error("d", "r1")], "r1")
    write_shard(out, "scores", [score("c", "r2")], "r2")  # c retried by a later run
    write_shard(out, "errors", [error("e", "r1", "DecodeTimeout")], "r1", seq=1)
    write_shard(out, "errors", [error("e", "r2", "DecoderCrashed")], "r2")  # failed again
    settled = settle(str(out))
    assert sorted(settled.scores) == ["a", "b", "c"]
    assert settled.scores["c"] == "r2"
    assert sorted(settled.errors) == ["d", "e"] and settled.errors["e"][0] == "r2"
    assert settled.errors["e"][1] == "DecoderCrashed"
    assert settled.repeated == 3 and settled.superseded == 1
    assert settled.doubled == ["a", "e"]
    table = read_table(str(out), "errors", ["row_key", "error_type"])
    assert sorted(table.to_pylist(), key=lambda r: r["row_key"]) == [
        {"row_key": "d", "error_type": "CorruptVideo"},
        {"row_key": "e", "error_type": "DecoderCrashed"}]
    assert sorted(read_table(str(out), "scores", ["row_key"]).column(0).to_pylist()) == [
        "a", "b", "c"]


def test_verify_command_names_missing_rows(tmp_path, capsys):
    manifest = write_csv(tmp_path / "m.csv", [
        {"clip_id": "a", "video_uri": "/v/a.mp4"}, {"clip_id": "b", "video_uri": "/v/b.mp4"},
        {"clip_id": "c", "video_uri": "/v/c.mp4"}, {"clip_id": "a", "video_uri": "/v/a2.mp4"}])
    out = tmp_path / "out"
    write_shard(out, "scores", [score("a", "r1"), score("b", "r1")], "r1")
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_RECONCILIATION
    text = capsys.readouterr().out
    assert "manifest rows: 4; settled: 2 scored, 0 failed; missing: 2" in text
    assert "c (" in text and "a#repeat1 (" in text and "m.csv:" in text
    assert "FAILED" in text
    # the rest arrive (one twice, as from a retried bundle): verify passes, and says so
    write_shard(out, "errors", [error("c", "r1"), error("a#repeat1", "r1", "DuplicateClip",
                                                        "manifest")], "r1")
    write_shard(out, "errors", [error("c", "r1")], "r1", writer="retry")
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "missing: 0" in text and "rows written more than once: 1" in text
    assert "doubled ids: c" in text and "verify: OK" in text


def test_rows_of_other_manifests_are_counted_not_failed(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": "/v/a.mp4"}])
    out = tmp_path / "out"
    write_shard(out, "scores", [score("a", "r1"), score("zz", "r1")], "r1")
    result = reconcile(expected_rows(manifest, ManifestOptions()), settle(str(out)), "r1")
    assert result.ok and result.not_in_manifest == 1
    assert (result.run_scored, result.run_failed) == (2, 0)


def test_a_file_that_is_not_parquet_is_one_clear_error(tmp_path, capsys):
    manifest = write_csv(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": "/v/a.mp4"}])
    out = tmp_path / "out"
    (out / "scores").mkdir(parents=True)
    (out / "scores" / "empty.parquet").write_bytes(b"")
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.parquet (0 bytes) is not a Parquet file" in err[0]


@pytest.mark.parametrize("kind", ["scores", "errors"])
def test_no_temporary_file_is_ever_read_as_a_shard(tmp_path, kind):
    out = tmp_path / "out"
    write_shard(out, kind, [score("a", "r1") if kind == "scores" else error("a", "r1")], "r1")
    (out / kind / "r1-w-000001.parquet.tmp").write_bytes(b"half a file")
    settled = settle(str(out))
    assert settled.files[kind] == [str(out / kind / "r1-w-000000.parquet")]


def test_content_keys_are_stable_across_versions():
    """The key of a row without clip or clip_id is stored in outputs and matched by later
    runs (--skip-existing, verify), so it must never change: pinned here, with the
    properties it promises (field order does not matter; non-ASCII text and values
    that are not JSON types are hashed as written)."""
    import datetime

    from beam_i3d.job.row_keys import content_identity

    row = {"label": "café", "n": 1, "when": datetime.date(2020, 1, 2)}
    assert content_identity(row) == "manifest-row:90b24c62aa287825"
    assert content_identity(dict(reversed(list(row.items())))) == content_identity(row)
    assert content_identity({**row, "label": "cafe"}) != content_identity(row)
