"""The pipeline's routing of manifest rows (ReadClipRequests on a real Beam runner):
several files in all three formats, repeats across files, bad rows, an unreadable file,
templates and --ignore-times. Every row must come out exactly once, as a request or an
error, under the key the launcher's own count (verify.expected_rows) expects.

The expectations here are computed from how the rows were generated, not by the code
under test; the cross-check with verify is on top of that."""

from __future__ import annotations

import csv
import json
import os
import re

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.pipeline import ScoreOptions
from beam_i3d.job.routing import ReadClipRequests
from beam_i3d.job.verify import expected_rows

COLUMNS = ["clip_id", "video_uri", "start_sec", "end_sec", "label"]


def write_manifest(path: str, rows: list[dict]) -> None:
    """rows: dicts over COLUMNS (None = empty) in the format the file name says."""
    if path.endswith(".csv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    elif path.endswith(".jsonl"):
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    else:
        table = pa.table({k: pa.array([None if r.get(k) is None else str(r[k]) for r in rows],
                                      pa.string()) for k in COLUMNS})
        pq.write_table(table, path)


_COLLECTED: dict[str, list] = {}


def _keep(element, name: str) -> None:
    # A module-level function (pickled by reference) so that the in-process runner's
    # copy of the step appends to this module's dict.
    _COLLECTED.setdefault(name, []).append(element)


def route(pattern: str, output: str, **options) -> tuple[list, list]:
    """(requests, errors) of ReadClipRequests over the manifests ``pattern`` matches, on
    the DirectRunner in its default in-process mode."""
    opts = ScoreOptions(manifest=pattern, output=output, **options)
    _COLLECTED.clear()
    with BeamPipeline() as p:
        requests, errors, _ = p | ReadClipRequests(opts)
        requests | "KeepRequests" >> beam.Map(_keep, "requests")
        errors | "KeepErrors" >> beam.Map(_keep, "errors")
    return list(_COLLECTED.get("requests", [])), list(_COLLECTED.get("errors", []))


# --- one worked example --------------------------------------------------------------------


def test_several_manifests_with_repeats_bad_rows_and_an_unreadable_file(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    write_manifest(str(d / "a.csv"), [
        {"clip_id": "x", "video_uri": "/v/x.mp4", "label": "abseiling"},
        {"clip_id": "y", "video_uri": "/v/y.mp4", "start_sec": 2, "end_sec": 1},  # bad times
        {"clip_id": None, "video_uri": "/v/free.mp4", "start_sec": 1, "end_sec": 3},
    ])
    write_manifest(str(d / "b.jsonl"), [
        {"clip_id": "x", "video_uri": "/v/x2.mp4"},             # x, first repeat
        {"clip_id": "y", "video_uri": "/v/y.mp4"},              # y (bad first), repeat
        {"clip_id": None, "video_uri": None, "label": "lost"},  # no URI, no clip_id
    ])
    write_manifest(str(d / "c.parquet"), [
        {"clip_id": "x", "video_uri": "/v/x3.mp4"},             # x, second repeat
        {"clip_id": "z", "video_uri": "/v/z.mp4", "start_sec": 0.5, "end_sec": 4.5},
    ])
    (d / "d.parquet").write_bytes(b"PAR1 this is not a parquet file")  # unreadable
    requests, errors = route(str(d / "*"), str(tmp_path / "out"))

    by_key = {r.row_key: r for r in requests}
    derived = sorted(set(by_key) - {"x", "z"})
    assert len(by_key) == 3 and len(derived) == 1 and derived[0].startswith("free.mp4#")
    assert by_key["x"].video_uri == "/v/x.mp4"  # the first of x in manifest order
    assert (by_key["z"].start_sec, by_key["z"].end_sec) == (0.5, 4.5)
    errors_by_key = {e["row_key"]: e for e in errors}
    assert len(errors_by_key) == len(errors) == 6
    kinds = {k: (e["stage"], e["error_type"]) for k, e in errors_by_key.items()}
    lost = next(k for k in kinds if k.startswith("manifest-row:"))
    assert kinds == {
        "x#repeat1": ("manifest", "DuplicateClip"),
        "x#repeat2": ("manifest", "DuplicateClip"),
        "y": ("manifest", "ManifestError"),
        "y#repeat1": ("manifest", "DuplicateClip"),
        lost: ("manifest", "ManifestError"),
        f"manifest-file:{d / 'd.parquet'}": ("manifest", "ManifestError"),
    }
    assert errors_by_key["x#repeat2"]["source"] == f"{d / 'c.parquet'}:1"
    assert errors_by_key["x#repeat2"]["video_uri"] == "/v/x3.mp4"
    assert "not after start" in errors_by_key["y"]["message"]
    assert "cannot read manifest" in errors_by_key[f"manifest-file:{d / 'd.parquet'}"]["message"]
    launcher = [row.row_key for row in expected_rows(str(d / "*"), ManifestOptions())]
    assert sorted(launcher) == sorted(list(by_key) + list(errors_by_key))


def test_templates_and_ignore_times_go_through_the_pipeline(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    rows = [{"youtube_id": "abc", "time_start": "12", "time_end": "22"},
            {"youtube_id": "def", "time_start": "0", "time_end": "10"}]
    with open(d / "k.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["youtube_id", "time_start", "time_end"])
        writer.writeheader()
        writer.writerows(rows)
    template = "/videos/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    requests, errors = route(str(d / "k.csv"), str(tmp_path / "o1"), video_template=template)
    assert errors == []
    assert sorted((r.video_uri, r.start_sec, r.end_sec) for r in requests) == [
        ("/videos/abc_000012_000022.mp4", 12.0, 22.0),
        ("/videos/def_000000_000010.mp4", 0.0, 10.0)]
    requests, errors = route(str(d / "k.csv"), str(tmp_path / "o2"), video_template=template,
                             ignore_times=True)
    assert errors == []
    assert sorted((r.video_uri, r.start_sec, r.end_sec) for r in requests) == [
        ("/videos/abc_000012_000022.mp4", None, None),
        ("/videos/def_000000_000010.mp4", None, None)]


# --- random manifests ----------------------------------------------------------------------

IDS = ["a", "b", "c", "d"]
kind = st.sampled_from(["good", "good", "timed", "bad_times", "no_uri"])
row_spec = st.tuples(st.sampled_from(IDS + [None]), kind, st.integers(0, 10**6))
manifests = st.lists(  # files of rows; each file's format is drawn too
    st.tuples(st.sampled_from([".csv", ".jsonl", ".parquet"]),
              st.lists(row_spec, min_size=0, max_size=6)),
    min_size=1, max_size=3)


def realise(spec, serial: int) -> dict:
    clip_id, what, n = spec
    row = {"clip_id": clip_id, "video_uri": f"/v/{serial}-{n}.mp4", "label": None}
    if what == "timed":
        row.update(start_sec=1, end_sec=2.5)
    elif what == "bad_times":
        row.update(start_sec=3, end_sec=3)
    elif what == "no_uri":
        row.update(video_uri=None, label=f"row {serial}-{n}")  # unique content
    return row


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=manifests)
def test_every_random_row_is_routed_exactly_once(tmp_path_factory, files):
    d = tmp_path_factory.mktemp("random")
    serial, generated = 0, []  # (file index, line, clip_id or None, good?)
    for index, (suffix, specs) in enumerate(files):
        rows = []
        for spec in specs:
            rows.append(realise(spec, serial))
            generated.append((index, len(rows), spec[0], spec[1] in ("good", "timed")))
            serial += 1
        write_manifest(str(d / f"f{index}{suffix}"), rows)
    requests, errors = route(str(d / "f*"), str(d / "out"))

    keys = [r.row_key for r in requests] + [e["row_key"] for e in errors]
    assert len(keys) == len(set(keys)) == len(generated)  # each row once, nothing lost
    # Rows of one clip_id, in (file, line) order: the first keeps the id and is scored
    # if it is good (else reported); the k-th repeat is a DuplicateClip "<id>#repeat<k>".
    requested = {r.row_key for r in requests}
    error_types = {e["row_key"]: e["error_type"] for e in errors}
    for clip_id in IDS:
        rows = sorted(g for g in generated if g[2] == clip_id)
        for k, (_, _, _, good) in enumerate(rows):
            key = clip_id if k == 0 else f"{clip_id}#repeat{k}"
            if k == 0 and good:
                assert key in requested, key
            else:
                assert error_types[key] == ("ManifestError" if k == 0 else "DuplicateClip")
    anonymous_good = sum(1 for g in generated if g[2] is None and g[3])
    assert len(requests) == anonymous_good + sum(
        1 for clip_id in IDS
        if (rows := sorted(g for g in generated if g[2] == clip_id)) and rows[0][3])
    assert sorted(keys) == sorted(r.row_key for r in expected_rows(str(d / "f*"),
                                                                   ManifestOptions()))


# --- the routing's steps, called directly --------------------------------------------------
# (the DoFns' own logic, exactly; the tests above run them on a real runner)

from apache_beam.io.filesystem import FileMetadata  # noqa: E402
from apache_beam.pvalue import TaggedOutput  # noqa: E402

from beam_i3d.errors import CorruptVideo, DecodeTimeout, OutputError  # noqa: E402
from beam_i3d.job.routing import (DoneKeys, ParseManifestFile, SettleEachKey,  # noqa: E402
                                  done_keys_in_parquet)
from beam_i3d.job.row_keys import keyed_rows  # noqa: E402
from beam_i3d.job.shards import shard_name, write_table_atomically  # noqa: E402
from schemas import SCHEMAS  # noqa: E402


def readable(path) -> beam.io.fileio.ReadableFile:
    return beam.io.fileio.ReadableFile(FileMetadata(str(path), os.path.getsize(path)))


def write_output_shard(output, kind: str, rows: list[dict], run: str = "r1"):
    """One shard ``output/kind/<run>-w-000000.parquet`` of the ``kind`` schema from dicts
    (columns a dict lacks are null); returns its path."""
    schema = SCHEMAS[kind]
    table = pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in schema})
    path = output / kind / shard_name(run, "w", 0)
    write_table_atomically(table, str(path))
    return path


def test_parse_manifest_file_yields_keyed_rows_or_one_error(tmp_path):
    write_manifest(str(tmp_path / "m.csv"), [{"clip_id": "a", "video_uri": "/v/a.mp4"},
                                              {"clip_id": "b", "video_uri": ""}])
    parse = ParseManifestFile(ManifestOptions())
    out = list(parse.process(readable(tmp_path / "m.csv")))
    assert [(identity, row.source, row.request is not None) for identity, row in out] == [
        ("a", f"{tmp_path / 'm.csv'}:2", True), ("b", f"{tmp_path / 'm.csv'}:3", False)]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 truncated")
    (tagged,) = parse.process(readable(tmp_path / "bad.parquet"))
    bad = str(tmp_path / "bad.parquet")
    assert isinstance(tagged, TaggedOutput) and tagged.tag == ParseManifestFile.ERRORS
    record = tagged.value
    assert (record["stage"], record["error_type"], record["row_key"], record["source"],
            record["clip_id"], record["video_uri"]) == (
        "manifest", "ManifestError", f"manifest-file:{bad}", bad, None, None)
    assert record["message"].startswith(f"{bad}: cannot read manifest: ArrowInvalid: ")
    (tmp_path / "m.txt").write_text("clip_id\n")  # our own ManifestError, kept as it is
    (tagged,) = parse.process(readable(tmp_path / "m.txt"))
    assert tagged.value["message"] == (
        f"{tmp_path / 'm.txt'}: unknown manifest format; name it .csv, .jsonl (.ndjson, "
        ".json) or .parquet (.pq)")


def test_done_keys_are_settled_keys_under_each_identity_and_transient_errors_retry(tmp_path):
    def shard(kind, keys, **columns):
        return write_output_shard(tmp_path, kind, [
            {"row_key": k, "clip_id": k.split("#")[0], "run_id": "r1",
             **{c: v[i] for c, v in columns.items()}} for i, k in enumerate(keys)])

    scores = shard("scores", ["a", "x#repeat2"])
    assert list(done_keys_in_parquet(readable(scores))) == [
        ("a", "a"), ("x#repeat2", "x#repeat2"), ("x", "x#repeat2")]
    # "u": a manifest-stage row stays settled whatever its type (here one that would be
    # retried at any other stage, as "k" is).
    errors = shard("errors", ["t", "c", "m", "u", "k"],
                   error_type=["DecodeTimeout", "CorruptVideo", "ManifestError", "KeyError",
                               "KeyError"],
                   stage=["decode", "decode", "manifest", "manifest", "inference"])
    assert [k for _, k in done_keys_in_parquet(readable(errors))] == ["t", "c", "m", "u", "k"]
    assert [k for _, k in done_keys_in_parquet(readable(errors), True)] == ["c", "m", "u"]
    assert DecodeTimeout.transient and not CorruptVideo.transient


def test_done_keys_name_an_output_file_that_is_not_parquet(tmp_path):
    bad = tmp_path / "errors" / "part-x.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(OutputError, match=rf"^{re.escape(str(bad))} \(18 bytes\) is not a "
                                          "Parquet file beam-i3d wrote"):
        list(done_keys_in_parquet(readable(bad), True))


def test_done_keys_reads_scores_windows_and_errors_of_the_output(tmp_path):
    from apache_beam.testing.util import assert_that, equal_to

    for kind, key in (("scores", "s"), ("windows", "w@w0"), ("errors", "e"),
                      ("plans", "p"), ("timelines", "t")):
        write_output_shard(tmp_path / "out", kind, [{"row_key": key}], run="r")
    with BeamPipeline() as p:
        done = p | DoneKeys(str(tmp_path / "out"), False)
        assert_that(done, equal_to([("s", "s"), ("w@w0", "w@w0"), ("e", "e")]))
    with BeamPipeline() as p:  # an output that holds nothing yet
        assert_that(p | DoneKeys(str(tmp_path / "empty"), False), equal_to([]))


def keyed(tmp_path, rows, name="m.csv"):
    path = tmp_path / name
    write_manifest(str(path), rows)
    return list(keyed_rows(str(path), path.read_bytes(), ManifestOptions()))


def test_settle_each_key_scores_the_first_row_and_reports_each_repeat(tmp_path):
    rows = keyed(tmp_path, [{"clip_id": "x", "video_uri": "/v/x1.mp4"},
                            {"clip_id": "x", "video_uri": "/v/x2.mp4"},
                            {"clip_id": "x", "video_uri": "/v/x3.mp4"}])
    m = tmp_path / "m.csv"
    out = list(SettleEachKey().process(("x", {"rows": list(reversed(rows)), "done": []})))
    # a fresh run groups the rows alone (GroupByKey, no settled keys): the same outputs
    fresh = list(SettleEachKey().process(("x", iter(reversed(rows)))))
    assert [(getattr(o, "tag", None), getattr(o, "value", o)) for o in fresh] == [
        (getattr(o, "tag", None), getattr(o, "value", o)) for o in out]
    assert out[0].row_key == "x" and out[0].video_uri == "/v/x1.mp4"
    assert all(isinstance(o, TaggedOutput) and o.tag == SettleEachKey.ERRORS for o in out[1:])
    assert [o.value for o in out[1:]] == [
        {"clip_id": "x", "video_uri": f"/v/x{n}.mp4", "stage": "manifest",
         "error_type": "DuplicateClip",
         "message": f"{m}:{n + 1}: clip 'x' repeats {m}:2, the row kept for it whatever "
                    f"its outcome; this repeat is not scored; it names another video: "
                    f"/v/x{n}.mp4 (the kept row: /v/x1.mp4)",
         "source": f"{m}:{n + 1}", "row_key": f"x#repeat{n - 1}"} for n in (2, 3)]
    # resuming: the first and the second repeat are settled already; only the first
    # repeat's key is new
    out = list(SettleEachKey().process(("x", {"rows": rows, "done": ["x", "x#repeat2"]})))
    assert [(o.tag, o.value["row_key"]) for o in out] == [
        (SettleEachKey.ERRORS, "x#repeat1")]
    assert list(SettleEachKey().process(("x", {"rows": [], "done": ["x"]}))) == []


def test_settle_each_key_reports_a_bad_first_row_and_its_repeats(tmp_path):
    rows = keyed(tmp_path, [{"clip_id": "y", "video_uri": "/v/y.mp4", "start_sec": 3,
                             "end_sec": 1},
                            {"clip_id": "y", "video_uri": "/v/y2.mp4"},
                            {"clip_id": None, "video_uri": None, "label": "lost"},
                            {"clip_id": None, "video_uri": None, "label": "lost"}])
    m = tmp_path / "m.csv"
    out = list(SettleEachKey().process(("y", {"rows": rows[:2], "done": []})))
    assert [o.tag for o in out] == [SettleEachKey.ERRORS] * 2
    first, repeat = (o.value for o in out)
    assert (first["row_key"], first["error_type"], first["clip_id"], first["video_uri"],
            first["source"]) == ("y", "ManifestError", "y", "/v/y.mp4", f"{m}:2")
    assert first["message"].startswith(f"{m}:2: ")
    assert (repeat["row_key"], repeat["error_type"], repeat["video_uri"]) == (
        "y#repeat1", "DuplicateClip", "/v/y2.mp4")
    assert repeat["message"] == (f"{m}:3: clip 'y' repeats {m}:2, the row kept for it "
                                 "whatever its outcome (a bad row, reported); this repeat is "
                                 "not scored; it names another video: /v/y2.mp4 (the kept "
                                 "row: /v/y.mp4)")
    # two rows without a URI or clip_id and the same content: one identity, no clip
    # named, and the repeat's clip_id and URI stay empty too
    identity = rows[2].identity
    assert identity == rows[3].identity and identity.startswith("manifest-row:")
    out = [o.value for o in SettleEachKey().process((identity, {"rows": rows[2:],
                                                                "done": []}))]
    assert [(o["row_key"], o["error_type"], o["clip_id"], o["video_uri"]) for o in out] == [
        (identity, "ManifestError", None, None),
        (f"{identity}#repeat1", "DuplicateClip", None, None)]


def test_resuming_skips_settled_rows_retries_transient_errors_and_counts(tmp_path):
    """--skip-existing on a real runner: rows the output settles are skipped (and
    counted), transient errors are requested again with --retry-errors only, repeats
    are counted; the counters are the job's documented Beam metrics."""
    from apache_beam.metrics.metric import MetricsFilter
    from beam_i3d.job.progress import NAMESPACE

    out = tmp_path / "out"
    for kind, rows in (("scores", [("a", None, None)]),
                       ("errors", [("t", "DecodeTimeout", "decode"),
                                   ("c", "CorruptVideo", "decode")])):
        write_output_shard(out, kind, [
            {"row_key": key, "clip_id": key, "error_type": error_type, "stage": stage,
             "run_id": "r0"} for key, error_type, stage in rows], run="r0")
    manifest = tmp_path / "m.csv"
    write_manifest(str(manifest), [{"clip_id": c, "video_uri": f"/v/{c}.mp4"}
                                   for c in ("a", "t", "c", "d", "d")])

    def run(**options):
        opts = ScoreOptions(manifest=str(manifest), output=str(out), **options)
        _COLLECTED.clear()
        p = BeamPipeline()
        requests, errors, done = p | ReadClipRequests(opts)
        requests | "KeepRequests" >> beam.Map(lambda r: _keep(r.row_key, "requests"))
        errors | "KeepErrors" >> beam.Map(lambda e: _keep(e["row_key"], "errors"))
        if done is not None:
            done | "KeepDone" >> beam.Map(lambda d: _keep(d[1], "done"))
        result = p.run()
        result.wait_until_finish()
        counters = {c.key.metric.name: c.committed for c in result.metrics().query(
            MetricsFilter().with_namespace(NAMESPACE))["counters"]}
        return ({k: sorted(v) for k, v in _COLLECTED.items()}, done is None, counters)

    got, no_done, counters = run(skip_existing=True, retry_errors=True)
    assert got == {"requests": ["d", "t"], "errors": ["d#repeat1"],
                   "done": ["a", "c"]} and not no_done
    assert counters == {"manifest_rows": 5, "rows_skipped_existing": 2, "clips_repeated": 1}
    got, no_done, counters = run(skip_existing=True)
    assert got == {"requests": ["d"], "errors": ["d#repeat1"], "done": ["a", "c", "t"]}
    assert counters["rows_skipped_existing"] == 3
    got, no_done, counters = run()
    assert got == {"requests": ["a", "c", "d", "t"], "errors": ["d#repeat1"]} and no_done
    assert counters == {"manifest_rows": 5, "clips_repeated": 1}


def test_a_repeat_of_the_same_video_and_range_says_only_that_it_repeats(tmp_path):
    """Issue #21: the first row is "kept", not "scored" (it may fail); a repeat says
    when its video or time range differs from the kept row's, and only then."""
    rows = keyed(tmp_path, [{"clip_id": "z", "video_uri": "/v/z.mp4", "start_sec": 1},
                            {"clip_id": "z", "video_uri": "/v/z.mp4", "start_sec": 1},
                            {"clip_id": "z", "video_uri": "/v/z.mp4", "start_sec": 2,
                             "end_sec": 4},
                            {"clip_id": "z", "video_uri": "/v/other.mp4"}])
    m = tmp_path / "m.csv"
    out = list(SettleEachKey().process(("z", {"rows": rows, "done": []})))
    messages = [o.value["message"] for o in out[1:]]
    kept = f"repeats {m}:2, the row kept for it whatever its outcome; this repeat is not scored"
    assert messages == [
        f"{m}:3: clip 'z' {kept}",
        f"{m}:4: clip 'z' {kept}; it asks for another time range: 2 s to 4 s (the kept "
        "row: 1 s to the end)",
        f"{m}:5: clip 'z' {kept}; it names another video: /v/other.mp4 (the kept row: "
        "/v/z.mp4); it asks for another time range: the whole video (the kept row: 1 s to "
        "the end)"]
