"""Shards as the job writes them (beam_i3d.job.shards): atomic files, when a shard is
written, and what a new run does with an output that already holds results, on local
files and on GCS (the emulator of conftest.py)."""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_i3d.errors import OutputError
from beam_i3d.job import shards
from beam_i3d.job.shards import (OUTPUT_DIRS, WriteShards, existing_results, prepare_output,
                                 remove_results, shard_name, write_table_atomically)

SCHEMA = pa.schema([pa.field("row_key", pa.string(), nullable=False),
                    pa.field("n", pa.int32())], metadata={b"beam_i3d.run": b"r"})


def table(*keys):
    return pa.Table.from_pylist([{"row_key": k, "n": i} for i, k in enumerate(keys)],
                                schema=SCHEMA)


def test_shard_names_sort_by_run_then_writer_then_sequence():
    assert shard_name("20260102T030405Z-ab", "w1", 7) == "20260102T030405Z-ab-w1-000007.parquet"
    assert shard_name("r", "w", 123456) == "r-w-123456.parquet"


# --- One file, atomically ----------------------------------------------------------------


def test_a_local_shard_is_written_beside_itself_then_renamed(tmp_path, monkeypatch):
    """The Parquet bytes go to ``<name>.<8 hex>.parquet.tmp`` in the shard's own
    directory (created as needed), which is renamed into place: a reader listing
    ``*.parquet`` never sees a partial file, and nothing is left beside the shard."""
    seen = []
    real_write = pq.write_table

    def spy(data, where, *args, **kwargs):
        seen.append(where)
        real_write(data, where, *args, **kwargs)
        assert not os.path.exists(target)  # not in place until the rename

    monkeypatch.setattr(pq, "write_table", spy)
    target = str(tmp_path / "out" / "scores" / "r-w-000000.parquet")
    write_table_atomically(table("a", "b"), target)
    (tmp, ) = seen
    assert re.fullmatch(re.escape(target[: -len(".parquet")]) + r"\.[0-9a-f]{8}\.parquet\.tmp",
                        tmp), tmp
    assert os.listdir(tmp_path / "out" / "scores") == ["r-w-000000.parquet"]
    assert pq.read_table(target).equals(table("a", "b"))
    assert pq.read_schema(target).metadata == {b"beam_i3d.run": b"r"}


def test_a_shard_named_without_a_directory_goes_to_the_working_directory(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_table_atomically(table("a"), "s.parquet")
    assert os.listdir(tmp_path) == ["s.parquet"]
    write_table_atomically(table("b"), "file://" + str(tmp_path / "t.parquet"))
    assert sorted(os.listdir(tmp_path)) == ["s.parquet", "t.parquet"]
    assert pq.read_table(tmp_path / "t.parquet").column("row_key").to_pylist() == ["b"]


def test_a_shard_that_cannot_be_put_in_place_leaves_no_temporary_file(tmp_path):
    (tmp_path / "s.parquet").mkdir()  # a directory where the shard should go
    with pytest.raises(IsADirectoryError):
        write_table_atomically(table("a"), str(tmp_path / "s.parquet"))
    assert os.listdir(tmp_path) == ["s.parquet"]
    assert os.listdir(tmp_path / "s.parquet") == []


# --- When shards are written ---------------------------------------------------------------


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def monotonic(self):
        return self.now


def written(directory):
    """(file name, row keys) of each shard in ``directory``, in name order."""
    return [(name, pq.read_table(directory / name).column("row_key").to_pylist())
            for name in sorted(os.listdir(directory))]


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(shards, "time", clock)
    return clock


def test_a_shard_is_written_at_max_rows_and_at_the_end_of_each_bundle(tmp_path, clock):
    writer = shards._ShardWriter(str(tmp_path), SCHEMA, "run1", max_rows=2, max_seconds=120)
    writer.setup()
    writer.start_bundle()
    for key in "abcde":
        writer.process({"row_key": key, "n": 1})
    name = re.compile(r"run1-([0-9a-f]{12})-(\d{6})\.parquet")
    files = written(tmp_path)
    assert [(name.fullmatch(f)[2], keys) for f, keys in files] == [
        ("000000", ["a", "b"]), ("000001", ["c", "d"])]
    writer.finish_bundle()
    writer.start_bundle()
    writer.finish_bundle()  # an empty bundle writes nothing
    writer.start_bundle()
    writer.process({"row_key": "f", "n": 2})
    writer.finish_bundle()
    files = written(tmp_path)
    assert [(name.fullmatch(f)[2], keys) for f, keys in files] == [
        ("000000", ["a", "b"]), ("000001", ["c", "d"]), ("000002", ["e"]), ("000003", ["f"])]
    assert len({name.fullmatch(f)[1] for f, _ in files}) == 1  # one writer id
    assert pq.read_schema(tmp_path / files[0][0]) == SCHEMA
    assert pq.read_schema(tmp_path / files[0][0]).metadata == SCHEMA.metadata
    # Another worker (its own setup) writes under another id.
    other = shards._ShardWriter(str(tmp_path), SCHEMA, "run1", max_rows=2, max_seconds=120)
    other.setup()
    other.start_bundle()
    other.process({"row_key": "g", "n": 3})
    other.finish_bundle()
    assert len({name.fullmatch(f)[1] for f, _ in written(tmp_path)}) == 2


def test_a_shard_is_written_when_its_first_row_is_max_seconds_old(tmp_path, clock):
    writer = shards._ShardWriter(str(tmp_path), SCHEMA, "r", max_rows=100, max_seconds=120)
    writer.setup()
    writer.start_bundle()
    for key, at in (("a", 1000.0), ("b", 1119.5), ("c", 1120.0),  # 120 s after a
                    ("d", 1121.0), ("e", 1240.5)):                  # 119.5 s after d
        clock.now = at
        writer.process({"row_key": key, "n": 0})
    assert [keys for _, keys in written(tmp_path)] == [["a", "b", "c"]]
    clock.now = 5000.0
    writer.process({"row_key": "f", "n": 0})  # d's shard is old now: d, e, f
    assert [keys for _, keys in written(tmp_path)] == [["a", "b", "c"], ["d", "e", "f"]]
    writer.finish_bundle()
    assert len(written(tmp_path)) == 2


def test_write_shards_in_a_pipeline_counts_its_shards(tmp_path):
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = (pipeline
         | beam.Create([{"row_key": k, "n": i} for i, k in enumerate("abcde")])
         | WriteShards(str(tmp_path / "scores"), SCHEMA, "run1", max_rows=2))
    result = pipeline.run()
    result.wait_until_finish()
    files = written(tmp_path / "scores")
    assert sorted(k for _, keys in files for k in keys) == list("abcde")
    assert all(f.startswith("run1-") and len(keys) <= 2 for f, keys in files)
    # Written with the schema given (int32, its metadata), not one inferred from rows.
    assert {pq.read_schema(tmp_path / "scores" / f) == SCHEMA for f, _ in files} == {True}
    assert pq.read_schema(tmp_path / "scores" / files[0][0]).metadata == SCHEMA.metadata
    counters = result.metrics().query(MetricsFilter().with_name("shards_written"))["counters"]
    assert [(c.key.metric.namespace, c.committed) for c in counters] == [
        ("beam_i3d", len(files))]


@pytest.mark.parametrize("max_rows, max_seconds", [(0, 1.0), (-1, 1.0), (1, 0), (1, -0.5)])
def test_a_shard_needs_a_row_and_some_time(tmp_path, max_rows, max_seconds):
    with pytest.raises(ValueError) as e:
        WriteShards(str(tmp_path), SCHEMA, "r", max_rows, max_seconds)
    assert str(e.value) == "a shard needs max_rows >= 1 and max_seconds > 0"


def test_the_smallest_shards_are_allowed(tmp_path):
    WriteShards(str(tmp_path), SCHEMA, "r", max_rows=1, max_seconds=0.001)


# --- The output directory as a whole ---------------------------------------------------------


def fill(out, names):
    """Shards (and other files) at ``out/<name>`` for each name."""
    for name in names:
        path = out / name
        if name.endswith(".parquet"):
            write_table_atomically(table("a"), str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")


def test_existing_results_are_the_shards_of_every_result_directory(tmp_path):
    out = tmp_path / "out"
    assert existing_results(str(out)) == []
    fill(out, ["scores/b.parquet", "scores/a.parquet", "errors/e.parquet",
               "windows/w.parquet", "timelines/t.parquet", "plans/p.parquet",
               "scores/x.parquet.tmp", "other/o.parquet", "top.parquet"])
    assert existing_results(str(out)) == [str(out / p) for p in (
        "scores/a.parquet", "scores/b.parquet", "errors/e.parquet", "windows/w.parquet",
        "timelines/t.parquet", "plans/p.parquet")]


def test_an_empty_output_needs_no_decision(tmp_path):
    out = tmp_path / "out"
    assert prepare_output(str(out), skip_existing=False, overwrite=False) == 0
    fill(out, ["scores/leftover.parquet.tmp", "notes.txt"])
    assert prepare_output(str(out), skip_existing=False, overwrite=True) == 0
    assert sorted(os.listdir(out)) == ["notes.txt", "scores"]  # nothing to replace


def test_an_output_with_results_is_refused_without_a_decision(tmp_path):
    out = tmp_path / "out"
    fill(out, ["scores/a.parquet", "errors/e.parquet", "plans/p.parquet"])
    with pytest.raises(OutputError) as e:
        prepare_output(str(out), skip_existing=False, overwrite=False)
    assert str(e.value) == (
        f"{out} already holds results (3 file(s) under "
        "scores/errors/windows/timelines/plans/): pass --skip-existing to resume (score "
        "only the rows not settled yet) or --overwrite to replace them")
    with pytest.raises(OutputError):
        prepare_output(str(out), skip_existing=False, overwrite=False, dry_run=True)
    assert len(existing_results(str(out))) == 3


def test_skip_existing_keeps_everything(tmp_path):
    out = tmp_path / "out"
    fill(out, ["scores/a.parquet", "errors/e.parquet"])
    for overwrite in (False, True):  # resuming wins: nothing is removed
        assert prepare_output(str(out), skip_existing=True, overwrite=overwrite) == 2
        assert len(existing_results(str(out))) == 2


def test_overwrite_removes_every_result_directory_and_only_those(tmp_path):
    out = tmp_path / "out"
    fill(out, ["scores/a.parquet", "scores/x.parquet.tmp", "errors/e.parquet",
               "windows/w.parquet", "timelines/t.parquet", "plans/p.parquet",
               "plans/deep/q.txt", "other/o.parquet", "notes.txt"])
    # A dry run says what it would replace and removes nothing.
    assert prepare_output(str(out), skip_existing=False, overwrite=True, dry_run=True) == 5
    assert sorted(os.listdir(out)) == sorted(["notes.txt", "other", *OUTPUT_DIRS])
    assert prepare_output(str(out), skip_existing=False, overwrite=True) == 5
    assert sorted(os.listdir(out)) == ["notes.txt", "other"]
    assert os.listdir(out / "other") == ["o.parquet"]
    remove_results(str(out))  # nothing left to remove: no error
    remove_results("file://" + str(tmp_path / "never"))
    assert os.listdir(tmp_path) == ["out"]


def test_output_on_gcs(gcs_emulator):
    """The remote branches: a shard is one object of the Parquet bytes, typed
    application/octet-stream; --overwrite deletes every object under the result
    directories and nothing beside them."""
    from apache_beam.io.filesystems import FileSystems
    from google.cloud import storage

    out = "gs://test-bucket/shards-test/out"
    write_table_atomically(table("a", "b"), f"{out}/scores/r-w-000000.parquet")
    with FileSystems.open(f"{out}/scores/r-w-000000.parquet") as f:
        assert pq.read_table(pa.BufferReader(f.read())).equals(table("a", "b"))
    blob = storage.Client(project="test-project").bucket("test-bucket").get_blob(
        "shards-test/out/scores/r-w-000000.parquet")
    assert blob.content_type == "application/octet-stream"
    for name in ("errors/e.parquet", "plans/p.parquet", "plans/sub/q.parquet"):
        write_table_atomically(table("c"), f"{out}/{name}")
    for name in ("windows/leftover.parquet.tmp", "notes.txt", "other/o.parquet"):
        with FileSystems.create(f"{out}/{name}") as f:
            f.write(b"x")
    with pytest.raises(OutputError, match=r"already holds results \(3 file\(s\)"):
        prepare_output(out, skip_existing=False, overwrite=False)
    assert prepare_output(out, skip_existing=False, overwrite=True) == 3
    left = FileSystems.match([out + "/**"])[0].metadata_list
    assert sorted(m.path for m in left) == [f"{out}/notes.txt", f"{out}/other/o.parquet"]
    assert existing_results(out) == []
    remove_results(out)  # nothing under the result directories: nothing to delete
    assert len(FileSystems.match([out + "/**"])[0].metadata_list) == 2
