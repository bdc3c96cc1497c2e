"""Manifest rows -> clip requests (pure functions, no Beam)."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_i3d.errors import ManifestError
from beam_i3d.job.manifest import (
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


# --- --video-template: text stays text, numbers only where the spec asks ----------------


def template_uri(template, row):
    return parse_row(row, "m.csv:2", ManifestOptions(video_template=template)).video_uri


def test_template_keeps_ids_that_look_like_numbers():
    rows = [{"video_id": "000123"}, {"video_id": "1_000"}, {"video_id": "1e3"},
            {"video_id": "-0"}, {"video_id": " 42 "}]
    assert [template_uri("/v/{video_id}.mp4", r) for r in rows] == [
        "/v/000123.mp4", "/v/1_000.mp4", "/v/1e3.mp4", "/v/-0.mp4", "/v/ 42 .mp4"]
    # A spec that does not ask for a number keeps the text too.
    assert template_uri("/v/{video_id:>8}.mp4", {"video_id": "0012"}) == "/v/    0012.mp4"


def test_template_numbers_where_the_spec_asks_for_them():
    row = {"youtube_id": "007", "time_start": "12.0", "time_end": "22", "x": "1.25"}
    assert template_uri("{youtube_id}_{time_start:06d}_{time_end:06d}", row) == "007_000012_000022"
    assert template_uri("{x:.1f}|{time_end:.2e}|{time_end:x}", row) == "1.2|2.20e+01|16"
    # No type but zero padding: a number (format("22", "06") would be "220000").
    assert template_uri("{time_end:06}|{x:06}", row) == "000022|001.25"
    # JSON Lines and Parquet give numbers already.
    assert template_uri("{a:03d}_{b:03d}_{c}", {"a": 5, "b": 7.0, "c": 1.5}) == "005_007_1.5"


@pytest.mark.parametrize("row, template, match", [
    ({"t": "12.5"}, "{t:06d}", r"\{:06d\} needs an integer, got '12.5'"),
    ({"t": "soon"}, "{t:06d}", r"needs a number, got 'soon'"),
    ({"t": "soon"}, "{t:.1f}", r"needs a number, got 'soon'"),
    ({"t": True}, "{t:03d}", r"needs a number, got True"),
    ({"t": ""}, "{t}", r"column 't', which is empty"),
    ({"t": "1"}, "{u}", r"needs column 'u', which the row lacks"),
    ({"t": "1"}, "{0}", r"must name columns"),
    ({"t": "1"}, "{t:Q}", r"cannot format this row"),
])
def test_template_errors(row, template, match):
    with pytest.raises(ManifestError, match=match):
        template_uri(template, row)


# --- Sources are line numbers -------------------------------------------------------


def test_csv_rows_carry_the_line_where_the_record_starts():
    csv_text = ('video_uri,label\n'          # line 1
                'a.mp4,x\n'                  # line 2
                '\n'                         # line 3: blank
                'b.mp4,"two\nlines"\n'       # lines 4-5
                'c.mp4,y\n'                  # line 6
                '"d\n\n.mp4",z\n'            # lines 7-9
                'e.mp4\n')                   # line 10: a missing field is None
    rows = list(read_rows("m.csv", csv_text.encode()))
    assert [n for n, _ in rows] == [2, 4, 6, 7, 10]
    assert rows[1][1] == {"video_uri": "b.mp4", "label": "two\nlines"}
    assert rows[4][1] == {"video_uri": "e.mp4", "label": None}


def test_jsonl_rows_carry_their_line():
    # U+2028 and U+0085 may stand unescaped in JSON strings: they do not end a line.
    data = ('\n{"video_uri": "a.mp4"}\n\n{"video_uri": "b.mp4", "label": "x\u2028y\x85z"}\r\n'
            '{oops\n').encode()
    rows = list(read_rows("m.jsonl", data))
    assert [n for n, _ in rows] == [2, 4, 5]
    assert rows[1][1]["label"] == "x\u2028y\x85z"
    assert "__error__" in rows[2][1]


# --- Values and encodings -------------------------------------------------------------


@pytest.mark.parametrize("value, match", [
    (True, "not a number"), (False, "not a number"), ([1], "not a number"),
    ({"s": 1}, "not a number"), ("1_000", "not a number"), ("0x10", "not a number"),
    ("nan", "finite"), ("-inf", "finite"), ("Infinity", "finite"), (float("nan"), "finite"),
    (10 ** 400, "not a number"), ("1e400", "finite"),
])
def test_times_must_be_numbers(value, match):
    with pytest.raises(ManifestError, match=match):
        parse_row({"video_uri": "a.mp4", "start_sec": value}, "m:1", PLAIN)


def test_json_true_is_not_one_second():
    (_, row), = read_rows("m.jsonl", b'{"video_uri": "a.mp4", "start_sec": true}\n')
    with pytest.raises(ManifestError, match="start time True is not a number"):
        parse_row(row, "m.jsonl:1", PLAIN)
    assert parse_row({"video_uri": "a", "start_sec": " 1.5e0 "}, "m:1", PLAIN).start_sec == 1.5
    # Parquet decimal columns come as Decimal.
    assert parse_row({"video_uri": "a", "start_sec": Decimal("2.50")}, "m:1", PLAIN).start_sec == 2.5
    assert template_uri("{t:04d}", {"t": Decimal("12.0")}) == "0012"


def test_invalid_utf8_names_file_and_offset():
    data = "video_uri,label\na.mp4,caf\u00e9\n".encode("latin-1")
    with pytest.raises(ManifestError) as info:
        list(read_rows("gs://b/m.csv", data))
    offset = data.index(b"\xe9")
    assert str(info.value) == (f"gs://b/m.csv: not valid UTF-8 text: byte 0xe9 at offset {offset} "
                               "(line 2); save the manifest as UTF-8")
    with pytest.raises(ManifestError, match="m.jsonl: not valid UTF-8"):
        list(read_rows("m.jsonl", b'{"video_uri": "\xff.mp4"}\n'))
    with pytest.raises(ManifestError, match="UTF-16"):
        list(read_rows("m.csv", "video_uri\na.mp4\n".encode("utf-16")))


def test_bom_and_crlf_work():
    csv_bytes = "\ufeffvideo_uri,label\r\na.mp4,x\r\n\"b\r\n.mp4\",y\r\nc.mp4,z\r\n".encode()
    assert [(n, r) for n, r in read_rows("m.csv", csv_bytes)] == [
        (2, {"video_uri": "a.mp4", "label": "x"}),
        (3, {"video_uri": "b\r\n.mp4", "label": "y"}),
        (5, {"video_uri": "c.mp4", "label": "z"})]
    jsonl = '\ufeff{"video_uri": "a.mp4"}\r\n{"video_uri": "b.mp4"}\r\n'.encode()
    assert list(read_rows("m.jsonl", jsonl)) == [(1, {"video_uri": "a.mp4"}), (2, {"video_uri": "b.mp4"})]


def test_csv_that_cannot_be_parsed_names_the_line():
    huge = b'"' + b"x" * 200_000 + b'"'  # over csv.field_size_limit()
    with pytest.raises(ManifestError, match=r"m.csv:3: not valid CSV: field larger than"):
        list(read_rows("m.csv", b"video_uri\na.mp4\n" + huge + b"\n"))


# --- Exact messages, ids and places (what a user reads in the errors output) ------------


def test_messages_name_the_problem_exactly():
    def message(row, options=PLAIN):
        with pytest.raises(ManifestError) as info:
            parse_row(row, "m:1", options)
        return str(info.value)

    assert message({"label": "x"}) == (
        "no video URI: the row needs one of the columns video_uri, path, video "
        "(or use --video-template)")
    assert message({"video_uri": "a.mp4", "end_sec": "soon"}) == (
        "end time 'soon' is not a number of seconds")
    assert message({"video_uri": "a.mp4", "end_sec": "-2"}) == (
        "end time '-2' must be a finite number >= 0")
    assert message({"t": [1]}, ManifestOptions(video_template="{t:03d}")) == (
        "--video-template column 't' is a list ([1]), not text")  # names the column
    with pytest.raises(ManifestError) as info:
        manifest_format("clips.txt")
    assert str(info.value) == ("clips.txt: unknown manifest format; name it .csv, .jsonl "
                               "(.ndjson, .json) or .parquet (.pq)")


def test_a_json_row_that_is_not_an_object_does_not_end_the_file():
    rows = list(read_rows("m.jsonl", b'[1, 2]\n"text"\n{"video_uri": "a.mp4"}\n'))
    assert rows == [(1, {"__error__": "a JSON Lines row must be an object"}),
                    (2, {"__error__": "a JSON Lines row must be an object"}),
                    (3, {"video_uri": "a.mp4"})]


def test_derived_clip_ids_are_pinned():
    # Stored in outputs and matched by later runs: sha256("uri|start|end")[:12], with
    # times as repr(float) and a missing time as nothing.
    assert derive_clip_id("gs://b/d/v.mp4", None, None) == "v.mp4#177d3e3578c2"
    assert derive_clip_id("gs://b/d/v.mp4", None, 2) == "v.mp4#15199fef5811"
    # A trailing slash is not the name.
    assert derive_clip_id("gs://b/BOX/", 1.5, None) == "BOX#0635d8cfd980"
    timed = parse_row({"video_uri": "gs://b/d/v.mp4", "end_sec": "2"}, "m:1", PLAIN)
    assert timed.clip_id == "v.mp4#15199fef5811"


def test_requests_carry_their_source_and_order():
    request = parse_row({"video_uri": "a.mp4"}, "gs://b/m.csv:7", PLAIN, order=("gs://b/m.csv", 7))
    assert (request.source, request.order) == ("gs://b/m.csv:7", ("gs://b/m.csv", 7))
    assert parse_row({"video_uri": "a.mp4"}, "m:1", PLAIN).order == ("", 0)


def test_utf8_errors_count_lines_from_the_start_of_the_file():
    data = b"\nvideo_uri\na\xff.mp4\nb.mp4\nc.mp4\n"  # a blank first line; the byte on line 3
    with pytest.raises(ManifestError) as info:
        list(read_rows("m.csv", data))
    assert str(info.value) == ("m.csv: not valid UTF-8 text: byte 0xff at offset 12 (line 3); "
                               "save the manifest as UTF-8")
    with pytest.raises(ManifestError) as info:
        list(read_rows("m.csv", b"\xfe\xff" + "video_uri\na.mp4\n".encode("utf-16-be")))
    assert str(info.value) == "m.csv: the file is UTF-16 text; save the manifest as UTF-8"


def test_templates_the_general_formatter_handles():
    # A conversion or an index in a field goes through str.format's own parsing.
    assert template_uri("/v/{t!s}_{u[0]}.mp4", {"t": "ab", "u": "xyz"}) == "/v/ab_x.mp4"
    with pytest.raises(ManifestError) as info:
        template_uri("/v/{t", {"t": "1"})
    assert str(info.value) == ("--video-template cannot format this row: "
                               "expected '}' before end of string")


def test_csv_with_old_mac_line_ends_reads_each_line():
    # Lines ended by a lone CR ("CSV (Macintosh)" exports) are lines too, numbered as such.
    data = b"video_uri,label\ra.mp4,x\rb.mp4,y\r"
    assert list(read_rows("m.csv", data)) == [
        (2, {"video_uri": "a.mp4", "label": "x"}), (3, {"video_uri": "b.mp4", "label": "y"})]


def test_a_given_clip_id_is_kept_whatever_its_text():
    def clip_id(value):
        return parse_row({"video_uri": "/v/a.mp4", "clip_id": value}, "m:1", PLAIN).clip_id

    assert [clip_id(v) for v in ("XXXX", " c1 ", 7, "a#repeat1")] == [
        "XXXX", "c1", "7", "a#repeat1"]
    derived = derive_clip_id("/v/a.mp4", None, None)
    assert [clip_id(v) for v in ("", "  ", None)] == [derived] * 3


@pytest.mark.parametrize("line, match", [
    ({"video_uri": "a.mp4", "clip_id": {"id": 4}}, r"clip_id is an object \(\{'id': 4\}\), not text"),
    ({"video_uri": "a.mp4", "label": ["run", "jump"]}, r"label is a list \(\['run', 'jump'\]\)"),
    ({"video_uri": {"path": "a.mp4"}}, r"video_uri is an object"),
    ({"path": ["a.mp4"]}, r"path is a list"),  # an alias names itself
    ({"video_uri": True}, r"video_uri is true/false"),
    ({"video_uri": "a.mp4", "label": False}, r"label is true/false"),
])
def test_objects_and_lists_in_text_columns_are_row_errors(line, match):
    """A JSON object or list in a used text column is a ManifestError naming the column
    and, once keyed, the row's source -- not its Python repr as text (issue #21)."""
    from beam_i3d.job.row_keys import keyed_rows

    data = (json.dumps({"video_uri": "ok.mp4"}) + "\n" + json.dumps(line) + "\n").encode()
    (_, row), = [r for r in read_rows("m.jsonl", data) if r[0] == 2]
    with pytest.raises(ManifestError, match=match):
        parse_row(row, "m.jsonl:2", PLAIN)
    good, bad = keyed_rows("m.jsonl", data, PLAIN)
    assert good.request is not None and bad.request is None
    assert str(bad.error).startswith("m.jsonl:2: ")
    # The error row is not named by a repr either: by the clip_id when it is text.
    assert "{" not in bad.identity and "[" not in bad.identity
    if isinstance(line.get("clip_id"), str):
        assert bad.identity == line["clip_id"]


def test_json_numbers_in_text_columns_are_their_text():
    (_, row), = read_rows("m.jsonl", b'{"video_uri": "a.mp4", "clip_id": 4, "label": 7.5}\n')
    clip = parse_row(row, "m.jsonl:1", PLAIN)
    assert (clip.clip_id, clip.label) == ("4", "7.5")
    assert parse_row({"video_uri": "a", "clip_id": Decimal("12.50")}, "m:1", PLAIN).clip_id == "12.50"


def test_template_fields_that_are_objects_are_row_errors():
    with pytest.raises(ManifestError, match=r"--video-template column 'id' is an object"):
        template_uri("{id}.mp4", {"id": {"v": 1}})
    with pytest.raises(ManifestError, match=r"--video-template column 'split' is a list"):
        template_uri("{split}/{id}.mp4", {"id": "x", "split": ["val"]})
    with pytest.raises(ManifestError, match=r"column 'id' is an object"):
        template_uri("{id!r}.mp4", {"id": {"v": 1}})  # the general formatter too
    assert template_uri("{id}_{n}.mp4", {"id": 12, "n": 3}) == "12_3.mp4"
    # A column the template does not use may hold anything.
    assert template_uri("{id}.mp4", {"id": "x", "extra": {"any": [1]}}) == "x.mp4"


def test_parquet_list_and_struct_columns_are_row_errors():
    table = pa.table({
        "video_uri": ["a.mp4", "b.mp4", "c.mp4"],
        "clip_id": ["c1", "c2", "c3"],
        "label": pa.array([["x"], None, ["y", "z"]], pa.list_(pa.string())),
        "meta": pa.array([{"k": 1}, {"k": 2}, {"k": 3}]),  # not used: fine
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    rows = list(read_rows("m.parquet", buffer.getvalue()))
    with pytest.raises(ManifestError, match=r"label is a list \(\['x'\]\)"):
        parse_row(rows[0][1], "m.parquet:1", PLAIN)
    assert parse_row(rows[1][1], "m.parquet:2", PLAIN).label is None
    struct = pa.table({"video_uri": pa.array([{"bucket": "b", "name": "v.mp4"}])})
    buffer = io.BytesIO()
    pq.write_table(struct, buffer)
    (_, row), = read_rows("s.parquet", buffer.getvalue())
    with pytest.raises(ManifestError, match="video_uri is an object"):
        parse_row(row, "s.parquet:1", PLAIN)
