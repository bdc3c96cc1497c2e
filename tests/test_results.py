"""The read rule of beam_i3d.job.results on real shards: which row settles each key,
what settle() counts, and the readers built on it (read_table, read_plans,
read_key_columns), on local files and on GCS (the emulator of conftest.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from beam_i3d.errors import OutputError
from beam_i3d.job.results import (list_shards, read_columns, read_key_columns, read_plans,
                                  read_table, settle)
from beam_i3d.job.shards import write_table_atomically
from schemas import ERRORS_SCHEMA, PLANS_SCHEMA, SCORES_SCHEMA

# Version-1 files: no row_key, no run_id; the key is the clip_id.
V1_SCORES = pa.schema([("clip_id", pa.string()), ("video_uri", pa.string()),
                       ("predicted_probability", pa.float32())])
V1_ERRORS = pa.schema([("clip_id", pa.string()), ("video_uri", pa.string()),
                       ("stage", pa.string()), ("error_type", pa.string())])


def shard(path, schema, rows):
    """Write ``rows`` (dicts; missing fields are filled in) as one shard at ``path``."""
    filler = {pa.string(): "x", pa.float32(): 0.5, pa.int32(): 9}
    full = [{f.name: r[f.name] if f.name in r else
             (None if f.nullable else filler.get(f.type, [])) for f in schema}
            for r in rows]
    write_table_atomically(pa.Table.from_pylist(full, schema=schema), str(path))


def score(key, run, p=0.5, clip_id=None):
    return {"row_key": key, "run_id": run, "clip_id": clip_id or key,
            "predicted_probability": p,
            "top_k": [{"label": "a", "index": 0, "probability": p, "logit": 1.0}],
            "logits": [1.0]}


def error(key, run, error_type="CorruptVideo", stage="decode"):
    return {"row_key": key, "run_id": run, "clip_id": key, "error_type": error_type,
            "stage": stage}


@pytest.fixture
def mixed(tmp_path):
    """An output holding version-1 shards (keyed by clip_id, no run) beside shards of a
    later run ``r2``: a copy, a key that is not its clip_id, errors superseded by
    scores, an error row without any key."""
    out = tmp_path / "out"
    shard(out / "scores" / "0-v1.parquet", V1_SCORES, [
        {"clip_id": "a", "predicted_probability": 0.1},
        {"clip_id": "b", "predicted_probability": 0.2}])
    shard(out / "scores" / "r2-w-000000.parquet", SCORES_SCHEMA, [
        score("a", "r2", 0.3), score("x#repeat1", "r2", 0.4, clip_id="x")])
    shard(out / "errors" / "0-v1.parquet", V1_ERRORS, [
        {"clip_id": None, "stage": "manifest", "error_type": "BadRow"},
        {"clip_id": "c", "stage": "decode", "error_type": "CorruptVideo"},
        {"clip_id": "d", "stage": "decode", "error_type": "CorruptVideo"}])
    shard(out / "errors" / "r2-w-000000.parquet", ERRORS_SCHEMA, [
        error("d", "r2", "DecoderCrashed"), error("b", "r2"), error("x#repeat1", "r2")])
    return out


def test_settle_reads_version_1_files_by_clip_id_beside_later_runs(mixed):
    settled = settle(str(mixed))
    # a: the v2 score of run r2 beats the v1 one (no run: ""); b: the v1 score, whose
    # error of r2 is superseded; x#repeat1 is keyed by row_key, not by its clip_id x.
    assert settled.scores == {"a": "r2", "b": "", "x#repeat1": "r2"}
    # c: only a v1 error (after the keyless row, which is skipped); d: failed again in r2.
    assert settled.errors == {"c": ("", "CorruptVideo", "decode"),
                              "d": ("r2", "DecoderCrashed", "decode")}
    assert settled.rows == {"scores": 4, "errors": 6}
    assert (settled.repeated, settled.superseded) == (5, 2)
    assert settled.doubled == ["a", "d"]
    assert settled.files == {
        "scores": [str(mixed / "scores" / "0-v1.parquet"),
                   str(mixed / "scores" / "r2-w-000000.parquet")],
        "errors": [str(mixed / "errors" / "0-v1.parquet"),
                   str(mixed / "errors" / "r2-w-000000.parquet")]}
    assert {p.split("/out/")[1]: m.tolist() for p, m in settled.keep.items()} == {
        "scores/0-v1.parquet": [False, True], "scores/r2-w-000000.parquet": [True, True],
        "errors/0-v1.parquet": [False, True, False],
        "errors/r2-w-000000.parquet": [True, False, False]}
    assert settled.run_counts("r2") == (2, 1) and settled.run_counts("") == (1, 1)


def test_read_table_joins_version_1_and_later_files(mixed):
    """Without ``columns``: every column of every file, the v1 rows with nulls where
    they have no column."""
    table = read_table(str(mixed), "scores")
    assert set(table.column_names) == set(SCORES_SCHEMA.names)
    rows = sorted(table.select(["clip_id", "row_key", "run_id", "predicted_probability"])
                  .to_pylist(), key=lambda r: r["clip_id"])
    assert [(r["clip_id"], r["row_key"], r["run_id"]) for r in rows] == [
        ("a", "a", "r2"), ("b", None, None), ("x", "x#repeat1", "r2")]
    assert [r["predicted_probability"] for r in rows] == pytest.approx([0.3, 0.2, 0.4])
    errors = read_table(str(mixed), "errors", ["clip_id", "error_type"])
    assert sorted(errors.to_pylist(), key=lambda r: r["clip_id"]) == [
        {"clip_id": "c", "error_type": "CorruptVideo"},
        {"clip_id": "d", "error_type": "DecoderCrashed"}]


def test_copies_of_one_run_keep_the_first_shard_in_name_order(tmp_path):
    """A retried bundle's copy of a row (same run) does not replace the first one
    read: the kept row is that of the first shard in sorted order, so every reader
    (verify, report, read_table) keeps the same one."""
    out = tmp_path / "out"
    shard(out / "scores" / "r1-a-000000.parquet", SCORES_SCHEMA, [score("k", "r1", 0.25)])
    shard(out / "scores" / "r1-b-000000.parquet", SCORES_SCHEMA, [score("k", "r1", 0.75)])
    shard(out / "errors" / "r1-a-000000.parquet", ERRORS_SCHEMA, [error("e", "r1", "A")])
    shard(out / "errors" / "r1-b-000000.parquet", ERRORS_SCHEMA, [error("e", "r1", "B")])
    settled = settle(str(out))
    assert settled.errors == {"e": ("r1", "A", "decode")}
    assert [m.tolist() for m in settled.keep.values()] == [[True], [False], [True], [False]]
    assert read_table(str(out), "scores", ["row_key", "predicted_probability"],
                      settled).to_pylist() == [{"row_key": "k", "predicted_probability": 0.25}]
    assert (settled.repeated, settled.superseded, settled.doubled) == (2, 0, ["e", "k"])


def test_run_counts_count_each_kind_for_that_run_only(tmp_path):
    out = tmp_path / "out"
    shard(out / "scores" / "s.parquet", SCORES_SCHEMA,
          [score("a", "r1"), score("b", "r1"), score("c", "r2")])
    shard(out / "errors" / "e.parquet", ERRORS_SCHEMA,
          [error("d", "r1"), error("e", "r2"), error("f", "r2"), error("g", "r2")])
    settled = settle(str(out))
    assert settled.run_counts("r1") == (2, 1)
    assert settled.run_counts("r2") == (1, 3)
    assert settled.run_counts("r3") == (0, 0)


def test_an_output_without_rows_reads_as_empty_tables_of_the_schema(tmp_path):
    out = tmp_path / "out"
    shard(out / "scores" / "s.parquet", SCORES_SCHEMA, [score("a", "r1")])
    empty = read_table(str(out), "errors")
    assert empty.schema == ERRORS_SCHEMA and empty.num_rows == 0
    some = read_table(str(out), "errors", ["row_key", "stage"])
    assert some.schema == pa.schema([ERRORS_SCHEMA.field("row_key"),
                                     ERRORS_SCHEMA.field("stage")])
    assert some.num_rows == 0
    settled = settle(str(tmp_path / "nothing"))
    assert (settled.scores, settled.errors, settled.rows, settled.keep) == (
        {}, {}, {"scores": 0, "errors": 0}, {})


def test_settle_reads_windows_where_told(tmp_path):
    out = tmp_path / "out"
    shard(out / "windows" / "w.parquet", SCORES_SCHEMA, [score("a@0", "r1")])
    shard(out / "scores" / "s.parquet", SCORES_SCHEMA, [score("b", "r1")])
    assert settle(str(out), "windows").scores == {"a@0": "r1"}
    assert settle(str(out)).scores == {"b": "r1"}


def test_read_columns_reads_only_the_wanted_columns_the_file_has(tmp_path):
    path = tmp_path / "s.parquet"
    shard(path, SCORES_SCHEMA, [score("a", "r1"), score("b", "r2")])
    table = read_columns(str(path), ("run_id", "nope", "row_key"))
    assert table.column_names == ["run_id", "row_key"]
    assert table.to_pylist() == [{"run_id": "r1", "row_key": "a"},
                                 {"run_id": "r2", "row_key": "b"}]


def test_a_file_that_is_not_parquet_or_vanished_is_an_output_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(OutputError) as e:
        read_columns(str(bad), ("row_key",))
    message = str(e.value)
    assert message.startswith(f"{bad} (15 bytes) is not a Parquet file beam-i3d wrote (")
    assert message.endswith("); move it out of the output directory")
    # A shard removed between listing and reading (another run's --overwrite): the
    # same one-line error, without a size, not a traceback.
    gone = tmp_path / "gone.parquet"
    with pytest.raises(OutputError) as e:
        read_columns(str(gone), ("row_key",))
    assert str(e.value).startswith(f"{gone} is not a Parquet file beam-i3d wrote (")
    assert "No such file or directory" in str(e.value)


def test_local_listing_takes_visible_parquet_files_only(tmp_path):
    d = tmp_path / "scores"
    for name in ("b.parquet", "a.parquet", ".hidden.parquet", "c.parquet.tmp", "d.txt"):
        shard(d / name, SCORES_SCHEMA, [score("a", "r1")])
    assert list_shards(str(d)) == [str(d / "a.parquet"), str(d / "b.parquet")]
    assert list_shards("file://" + str(d)) == [str(d / "a.parquet"), str(d / "b.parquet")]
    assert list_shards(str(tmp_path / "missing")) == []


def test_key_columns_of_each_kind_of_shard(tmp_path):
    """What --skip-existing reads of each settled shard: (key, error_type, stage); a
    version-1 error row without a clip_id has no key and is left out."""
    scores = tmp_path / "scores.parquet"
    shard(scores, SCORES_SCHEMA, [score("a", "r1"), score("x#repeat1", "r1", clip_id="x")])
    assert list(read_key_columns(str(scores))) == [("a", None, None), ("x#repeat1", None, None)]
    errors = tmp_path / "errors.parquet"
    shard(errors, ERRORS_SCHEMA, [error("b", "r1", "DecodeTimeout", "decode"),
                                  error("c", "r1", "OutOfMemory", "inference")])
    assert list(read_key_columns(str(errors))) == [("b", "DecodeTimeout", "decode"),
                                                   ("c", "OutOfMemory", "inference")]
    v1 = tmp_path / "v1.parquet"
    shard(v1, V1_ERRORS, [{"clip_id": None, "stage": "manifest", "error_type": "BadRow"},
                          {"clip_id": "d", "stage": "decode", "error_type": "CorruptVideo"}])
    assert list(read_key_columns(str(v1))) == [("d", "CorruptVideo", "decode")]
    v1_scores = tmp_path / "v1s.parquet"
    shard(v1_scores, V1_SCORES, [{"clip_id": "e"}])
    assert list(read_key_columns(str(v1_scores))) == [("e", None, None)]
    # The opener given is what is read (the pipeline passes the matched file's).
    assert list(read_key_columns("gs://nowhere/x.parquet", lambda: open(errors, "rb"))) == [
        ("b", "DecodeTimeout", "decode"), ("c", "OutOfMemory", "inference")]


def test_a_file_without_either_key_column_has_no_keyed_rows(tmp_path):
    """Neither row_key nor clip_id (a version-1 error file written without a clip_id
    column): its rows are read and counted, but settle no key."""
    out = tmp_path / "out"
    shard(out / "errors" / "v1.parquet", pa.schema([("stage", pa.string()),
                                                    ("error_type", pa.string())]),
          [{"stage": "manifest", "error_type": "BadRow"}])
    settled = settle(str(out))
    assert (settled.errors, settled.rows["errors"]) == ({}, 0)
    assert settled.keep[str(out / "errors" / "v1.parquet")].tolist() == [False]
    assert list(read_key_columns(str(out / "errors" / "v1.parquet"))) == []


def plan(key, run, windows):
    return {"row_key": key, "run_id": run, "num_windows": windows, "clip_id": key,
            "range_start_sec": 0.0, "range_end_sec": 1.0, "window_sec": 1.0,
            "stride_sec": 1.0}


def test_plans_of_the_latest_run_count(tmp_path):
    """A resumed run plans a row again: its count wins, whichever shard comes first."""
    out = tmp_path / "out"
    assert read_plans(str(out)) == {}
    shard(out / "plans" / "a.parquet", PLANS_SCHEMA, [plan("k", "r2", 5), plan("m", "r2", 1)])
    shard(out / "plans" / "b.parquet", PLANS_SCHEMA, [plan("k", "r1", 3), plan("n", "r1", 2)])
    shard(out / "plans" / "c.parquet", PLANS_SCHEMA, [plan("n", "r3", 4)])
    assert read_plans(str(out)) == {"k": 5, "m": 1, "n": 4}


# --- On GCS (the emulator) -------------------------------------------------------------


def test_results_on_gcs(gcs_emulator):
    """The remote branches: listing (only the directory's own .parquet objects, with or
    without a trailing slash), reading, settling, and a remote object that is not
    Parquet."""
    from apache_beam.io.filesystems import FileSystems

    base = "gs://test-bucket/results-test"
    # A directory whose name ends in X: stripping must remove the slash only.
    box = f"{base}/BOX"
    for name in ("b.parquet", "a.parquet", "sub/c.parquet"):
        shard(f"{box}/{name}", SCORES_SCHEMA, [score("a", "r1")])
    for name in ("d.parquet.tmp", "e.txt"):
        with FileSystems.create(f"{box}/{name}") as f:
            f.write(b"x")
    assert list_shards(box + "/") == [f"{box}/a.parquet", f"{box}/b.parquet"]
    assert list_shards(box) == [f"{box}/a.parquet", f"{box}/b.parquet"]
    assert list_shards(f"{base}/missing") == []

    out = f"{base}/out"
    shard(f"{out}/scores/r1-w-000000.parquet", SCORES_SCHEMA,
          [score("a", "r1", 0.25), score("b", "r1")])
    shard(f"{out}/scores/r2-w-000000.parquet", SCORES_SCHEMA, [score("a", "r2", 0.75)])
    shard(f"{out}/errors/r1-w-000000.parquet", ERRORS_SCHEMA, [error("c", "r1")])
    settled = settle(out)
    assert settled.scores == {"a": "r2", "b": "r1"}
    assert settled.errors == {"c": ("r1", "CorruptVideo", "decode")}
    table = read_table(out, "scores", ["row_key", "predicted_probability"], settled)
    assert sorted(table.to_pylist(), key=lambda r: r["row_key"]) == [
        {"row_key": "a", "predicted_probability": 0.75},
        {"row_key": "b", "predicted_probability": 0.5}]
    np.testing.assert_array_equal(settled.keep[f"{out}/scores/r1-w-000000.parquet"],
                                  [False, True])

    with FileSystems.create(f"{out}/errors/bad.parquet") as f:
        f.write(b"")
    with pytest.raises(OutputError) as e:
        settle(out)
    assert str(e.value).startswith(
        f"{out}/errors/bad.parquet is not a Parquet file beam-i3d wrote (")
    assert str(e.value).endswith("); move it out of the output directory")
