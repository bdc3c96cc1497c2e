"""Manifest rows -> clip requests (pure functions, no Beam)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_i3d.errors import ManifestError
from beam_i3d.manifest import (
    ManifestOptions,
    derive_clip_id,
    manifest_format,
    parse_row,
    read_rows,
)

PLAIN = ManifestOptions()


def test_columns_and_aliases():
    a = parse_row({"video_uri": "gs://b/a.mp4", "start_sec": "1.5", "end_sec": "3",
                   "label": "x", "clip_id": "c1"}, "m.csv:1", PLAIN)
    assert (a.clip_id, a.video_uri, a.start_sec, a.end_sec, a.label) == (
        "c1", "gs://b/a.mp4", 1.5, 3.0, "x")
    b = parse_row({"path": "/v/b.mp4", "time_start": 2, "time_end": 4}, "m:2", PLAIN)
    assert (b.video_uri, b.start_sec, b.end_sec, b.label) == ("/v/b.mp4", 2.0, 4.0, None)
    c = parse_row({"video": "c.mp4", "start": "0", "end": ""}, "m:3", PLAIN)
    assert (c.start_sec, c.end_sec) == (0.0, None)


def test_derived_clip_id_is_deterministic_and_distinguishes_times():
    one = parse_row({"video_uri": "gs://b/v.mp4", "start_sec": "1"}, "m:1", PLAIN)
    again = parse_row({"path": "gs://b/v.mp4", "time_start": 1.0}, "other:9", PLAIN)
    other = parse_row({"video_uri": "gs://b/v.mp4", "start_sec": "2"}, "m:2", PLAIN)
    assert one.clip_id == again.clip_id == derive_clip_id("gs://b/v.mp4", 1.0, None)
    assert one.clip_id != other.clip_id
    assert one.clip_id.startswith("v.mp4#")


@pytest.mark.parametrize("row, match", [
    ({"label": "x"}, "no video URI"),
    ({"video_uri": "  "}, "no video URI"),
    ({"video_uri": "a.mp4", "start_sec": "soon"}, "not a number"),
    ({"video_uri": "a.mp4", "start_sec": "-1"}, ">= 0"),
    ({"video_uri": "a.mp4", "end_sec": "nan"}, ">= 0"),
    ({"video_uri": "a.mp4", "start_sec": "5", "end_sec": "2"}, "not after start"),
    ({"video_uri": "a.mp4", "start_sec": "5", "end_sec": "5"}, "not after start"),
])
def test_bad_rows(row, match):
    with pytest.raises(ManifestError, match=match):
        parse_row(row, "m:1", PLAIN)


def test_kinetics_csv_with_template_and_ignored_times():
    csv_text = ("label,youtube_id,time_start,time_end,split\n"
                "playing cricket,abc123,15,25,val\n"
                "abseiling,-_x9,0,10,val\n")
    options = ManifestOptions(
        video_template="gs://bucket/k400/{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4",
        ignore_times=True)
    rows = [parse_row(r, f"k.csv:{n}", options) for n, r in read_rows("k.csv", csv_text.encode())]
    assert [r.video_uri for r in rows] == [
        "gs://bucket/k400/val/abc123_000015_000025.mp4",
        "gs://bucket/k400/val/-_x9_000000_000010.mp4"]
    assert [(r.start_sec, r.end_sec, r.label) for r in rows] == [
        (None, None, "playing cricket"), (None, None, "abseiling")]
    assert rows[0].clip_id != rows[1].clip_id
    # Without --ignore-times the times cut the (untrimmed) video.
    kept = parse_row({"youtube_id": "a", "time_start": "15", "time_end": "25", "split": "v"},
                     "k:1", ManifestOptions(video_template=options.video_template))
    assert (kept.start_sec, kept.end_sec) == (15.0, 25.0)
    with pytest.raises(ManifestError, match="needs column 'split'"):
        parse_row({"youtube_id": "a", "time_start": "1", "time_end": "2"}, "k:1", options)


def test_read_rows_of_each_format():
    records = [{"video_uri": "a.mp4", "label": "x", "start_sec": None},
               {"video_uri": "b.mp4", "label": None, "start_sec": 1.0}]
    csv_bytes = "\ufeffvideo_uri,label,start_sec\na.mp4,x,\nb.mp4,,1.0\n".encode()
    jsonl = "\n".join(json.dumps(r) for r in records).encode() + b"\n\n"
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    for name, data in (("m.csv", csv_bytes), ("m.jsonl", jsonl), ("m.parquet", sink.getvalue())):
        parsed = [parse_row(r, f"{name}:{n}", PLAIN) for n, r in read_rows(name, data)]
        assert [(p.video_uri, p.start_sec) for p in parsed] == [("a.mp4", None), ("b.mp4", 1.0)]
        assert parsed[0].label == "x" and parsed[1].label is None


def test_bad_json_line_is_a_row_error():
    rows = list(read_rows("m.jsonl", b'{"video_uri": "a.mp4"}\n{oops\n[1, 2]\n'))
    assert len(rows) == 3
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_row(rows[1][1], "m:2", PLAIN)
    with pytest.raises(ManifestError, match="must be an object"):
        parse_row(rows[2][1], "m:3", PLAIN)


def test_unknown_format():
    with pytest.raises(ManifestError, match="unknown manifest format"):
        manifest_format("clips.txt")
    assert manifest_format("gs://b/CLIPS.CSV") == "csv"
