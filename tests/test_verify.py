"""Count in, count out: row keys, the read rule, and `beam-i3d verify` on real shards."""

from __future__ import annotations

import csv

import pyarrow as pa
import pytest

from beam_i3d.cli import EXIT_OK, EXIT_RECONCILIATION, main
from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.results import read_plans, read_table, settle
from beam_i3d.job.row_keys import assign_keys, content_identity, identities_of_key, row_key
from beam_i3d.job.shards import shard_name, write_table_atomically
from beam_i3d.job.verify import (expected_rows, expected_windows, is_windowed, reconcile,
                                  reconcile_output)
from beam_i3d.job.windows import window_key
from schemas import SCHEMAS


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
    schema = SCHEMAS[kind]
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


def window_score(row_key, k, run, num_windows):
    record = score(window_key(row_key, k), run, clip_id=row_key)
    record.update(window_index=k, window_start_sec=10.0 * k,
                  window_end_sec=10.0 * (k + 1), num_windows=num_windows)
    return record


def plan(row_key, num_windows, run):
    return {"clip_id": row_key, "video_uri": f"/v/{row_key}.mp4", "duration_sec": 30.0,
            "range_start_sec": 0.0, "range_end_sec": 30.0, "window_sec": 10.0,
            "stride_sec": 10.0, "num_windows": num_windows, "row_key": row_key,
            "run_id": run}


def test_summary_names_each_kind_of_row_with_exact_counts(tmp_path):
    """50 manifest rows: 22 scored twice (a retried bundle), one error superseded by a
    later run's score, one error, 26 missing; and 3 rows of other manifests (1 score,
    2 errors). Every count and every truncated list in the summary is checked."""
    ids = [f"k{i:02d}" for i in range(50)]
    manifest = write_csv(tmp_path / "m.csv",
                         [{"clip_id": c, "video_uri": f"/v/{c}.mp4"} for c in ids])
    out = tmp_path / "out"
    write_shard(out, "scores", [score(c, "r1") for c in ids[:22]] + [score("zz1", "r1")],
                "r1")
    write_shard(out, "scores", [score(c, "r1") for c in ids[:22]], "r1", writer="retry")
    write_shard(out, "errors", [error("k22", "r1"), error("k23", "r1"), error("zz2", "r1"),
                                error("zz3", "r1")], "r1")
    write_shard(out, "scores", [score("k22", "r2")], "r2")
    result = reconcile(expected_rows(manifest, ManifestOptions()), settle(str(out)), "r1",
                       skipped=4)
    assert (result.manifest_rows, result.scored, result.failed) == (50, 23, 1)
    assert [m.row_key for m in result.missing] == ids[24:]
    assert result.not_in_manifest == 3 and not result.ok
    lines = result.summary_lines()
    assert lines[0] == "manifest rows: 50; settled: 23 scored, 1 failed; missing: 26"
    assert lines[1] == "this run: 23 scored, 3 failed; 4 skipped as already settled"
    assert lines[2] == (
        "rows written more than once: 23 (1 errors superseded by a later score, 22 copies "
        "from retried work), collapsed to one per row; doubled ids: "
        + ", ".join(ids[:20]) + " ...")
    assert lines[3] == "rows of other manifests in the output: 3"
    assert lines[4] == "missing rows: " + ", ".join(
        f"{c} ({manifest}:{i + 2})" for i, c in enumerate(ids) if 24 <= i < 44) + (
        " and 6 more")
    assert len(lines) == 5
    # the other run's view; no truncation marks when the lists fit exactly
    result = reconcile(expected_rows(manifest, ManifestOptions()), settle(str(out)), "r2")
    assert result.summary_lines()[1] == "this run: 1 scored, 0 failed; 0 skipped as already settled"
    assert reconcile([], settle(str(out))).summary_lines()[:1] == [
        "manifest rows: 0; settled: 0 scored, 0 failed; missing: 0"]
    twenty = tmp_path / "twenty"
    write_shard(twenty, "scores", [score(c, "r1") for c in ids[:20]], "r1")
    write_shard(twenty, "scores", [score(c, "r1") for c in ids[:20]], "r1", writer="retry")
    result = reconcile(expected_rows(manifest, ManifestOptions())[:40], settle(str(twenty)))
    lines = result.summary_lines()
    assert lines[1].endswith("doubled ids: " + ", ".join(ids[:20]))
    assert lines[2] == "missing rows: " + ", ".join(
        f"{c} ({manifest}:{i + 2})" for i, c in enumerate(ids) if 20 <= i < 40)
    assert len(lines) == 3  # no "this run" line without a run, no other-manifests line
    one_more = reconcile(expected_rows(manifest, ManifestOptions())[:41], settle(str(twenty)))
    assert one_more.summary_lines()[2].endswith(f"k39 ({manifest}:41) and 1 more")


def test_an_unreadable_manifest_is_expected_as_one_row_in_file_order(tmp_path):
    """Manifest files are read in name order; one that cannot be read is expected as
    one row (``manifest-file:PATH``) in its place, and the files after it still count."""
    write_csv(tmp_path / "a.csv", [{"clip_id": "a1", "video_uri": "/v/a1.mp4"},
                                   {"clip_id": "a2", "video_uri": "/v/a2.mp4"}])
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    write_csv(tmp_path / "c.csv", [{"clip_id": "c1", "video_uri": "/v/c1.mp4"},
                                   {"clip_id": "a1", "video_uri": "/v/a1-again.mp4"}])
    rows = expected_rows(str(tmp_path / "*.*"), ManifestOptions())
    bad = str(tmp_path / "b.parquet")
    assert [(r.row_key, r.source) for r in rows] == [
        ("a1", f"{tmp_path / 'a.csv'}:2"), ("a2", f"{tmp_path / 'a.csv'}:3"),
        (f"manifest-file:{bad}", bad),
        ("c1", f"{tmp_path / 'c.csv'}:2"), ("a1#repeat1", f"{tmp_path / 'c.csv'}:3")]


def test_a_windowed_output_must_settle_every_planned_window(tmp_path, capsys):
    """Rows with a plan are expected as their windows (``R@w<k>``); a row without one
    (its video could not be probed) as itself, by one error."""
    manifest = write_csv(tmp_path / "m.csv", [
        {"clip_id": c, "video_uri": f"/v/{c}.mp4"} for c in ("long", "broken", "short")])
    out = tmp_path / "out"
    write_shard(out, "plans", [plan("long", 3, "r1"), plan("short", 1, "r1")], "r1")
    write_shard(out, "plans", [plan("long", 2, "r0")], "r0")  # an older run's plan
    write_shard(out, "windows", [window_score("long", 0, "r1", 3),
                                window_score("short", 0, "r1", 1)], "r1")
    write_shard(out, "errors", [error("broken", "r1", "CorruptVideo")], "r1")
    expected = expected_rows(manifest, ManifestOptions())
    assert [(r.row_key, r.source) for r in expected_windows(expected, read_plans(str(out)))] == [
        ("long@w0", f"{manifest}:2 window 0"), ("long@w1", f"{manifest}:2 window 1"),
        ("long@w2", f"{manifest}:2 window 2"), ("broken", f"{manifest}:3"),
        ("short@w0", f"{manifest}:4 window 0")]
    assert is_windowed(str(out)) and not is_windowed(str(tmp_path / "nothing"))
    result = reconcile_output(expected, str(out), "r1", skipped=2)
    assert [m.row_key for m in result.missing] == ["long@w1", "long@w2"]
    assert (result.manifest_rows, result.scored, result.failed) == (5, 2, 1)
    assert (result.run_scored, result.run_failed, result.skipped) == (2, 1, 2)
    assert result.what == "windows (and rows without windows)"
    # told it is not windowed, the rows themselves are looked up in scores/: all missing
    flat = reconcile_output(expected, str(out), "r1", skipped=2, windowed=False)
    assert (flat.scored, flat.failed, len(flat.missing), flat.what) == (0, 1, 2, "manifest rows")
    assert (flat.run_scored, flat.run_failed, flat.skipped) == (0, 1, 2)
    assert main(["verify", "--manifest", manifest, "--output", str(out) + "/"]) == (
        EXIT_RECONCILIATION)
    assert capsys.readouterr().out.splitlines() == [
        "windows (and rows without windows): 5; settled: 2 scored, 1 failed; missing: 2",
        f"missing rows: long@w1 ({manifest}:2 window 1), long@w2 ({manifest}:2 window 2)",
        f"verify: FAILED: 2 of 5 windows (and rows without windows) are in neither "
        f"{out}//windows nor {out}//errors"]
    # only windows, no plans (a run that lost its plans): still read as windowed
    (out / "plans" / shard_name("r1", "w", 0)).unlink()
    (out / "plans" / shard_name("r0", "w", 0)).unlink()
    assert is_windowed(str(out))
    assert reconcile_output(expected, str(out)).what == "windows (and rows without windows)"
    # only plans, no windows (every window failed): windowed too
    plans_only = tmp_path / "plans_only"
    write_shard(plans_only, "plans", [plan("short", 1, "r1")], "r1")
    assert is_windowed(str(plans_only))


def test_verify_run_writes_to_the_stream_it_is_given(tmp_path, capsys):
    import argparse
    import io

    from beam_i3d.job import verify

    manifest = write_csv(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": "/v/a.mp4"}])
    out = tmp_path / "run_X"  # only the trailing slashes of an output are dropped
    write_shard(out, "scores", [score("a", "r1")], "r1")
    (tmp_path / "run_").mkdir()
    args = argparse.Namespace(manifest=manifest, output=str(out), video_template=None,
                              ignore_times=False)
    for output, code, last in ((out, EXIT_OK, f"verify: OK: every manifest row is settled "
                                               f"exactly once in {out}//"),
                               (tmp_path / "empty", EXIT_RECONCILIATION,
                                f"verify: FAILED: 1 of 1 manifest rows are in neither "
                                f"{tmp_path / 'empty'}///scores nor {tmp_path / 'empty'}///errors")):
        stream = io.StringIO()
        args.output = str(output) + "//"
        assert verify.run(args, [], stream=stream) == code
        assert stream.getvalue().splitlines()[-1] == last
        assert capsys.readouterr().out == ""


def test_verify_command_prints_to_stdout_and_reads_rows_as_score_does(tmp_path, capsys):
    """--video-template and --ignore-times change the rows' keys as they do for score;
    everything verify says goes to stdout, the failure naming the scores directory."""
    manifest = write_csv(tmp_path / "m.csv", [
        {"clip_id": "", "video_uri": "", "youtube_id": "abc", "time_start": "3",
         "time_end": "13"}], fields=("clip_id", "video_uri", "youtube_id", "time_start",
                                     "time_end"))
    template = "/v/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    options = ManifestOptions(template, False)
    (key,) = [r.row_key for r in expected_rows(manifest, options)]
    (untimed,) = [r.row_key for r in expected_rows(manifest, ManifestOptions(template, True))]
    assert key != untimed
    out = tmp_path / "out"
    write_shard(out, "scores", [score(key, "r1")], "r1")
    args = ["verify", "--manifest", manifest, "--output", str(out), "--video-template",
            template]
    assert main(args) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.splitlines() == [
        "manifest rows: 1; settled: 1 scored, 0 failed; missing: 0",
        f"verify: OK: every manifest row is settled exactly once in {out}"]
    assert main(args + ["--ignore-times"]) == EXIT_RECONCILIATION
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.splitlines()[-1] == (
        f"verify: FAILED: 1 of 1 manifest rows are in neither {out}/scores nor {out}/errors")
    for given, missing in ((["--output", str(out)], "--manifest"),
                           (["--manifest", manifest], "--output")):
        with pytest.raises(SystemExit) as exit_:
            main(["verify", *given])
        assert exit_.value.code == 2
        assert f"the following arguments are required: {missing}" in capsys.readouterr().err


def test_verify_help_documents_each_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: beam-i3d verify --manifest GLOB --output DIR "
                           "[--video-template T] [--ignore-times]")
    for option in ("--manifest GLOB the manifest(s) the run scored, as given to score "
                   "(local or gs://)",
                   "--output DIR the run's output directory",
                   "--video-template TEMPLATE as given to score",
                   "--ignore-times as given to score"):
        assert option in text
