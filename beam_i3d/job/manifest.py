"""Clip manifests: which clips of which videos to score.

A manifest is CSV (with a header row), JSON Lines, or Parquet; the format follows the
file name (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``; ``.parquet``, ``.pq``). Columns:

``video_uri`` (required; aliases ``path``, ``video``)
    the video: a local path or any URI Beam's FileSystems read (gs://...).
``clip_id`` (optional)
    a unique name of the clip; when missing, derived from the URI and times
    (:func:`derive_clip_id`).
``start_sec`` / ``end_sec`` (optional; aliases ``time_start``/``time_end``, ``start``/``end``)
    the clip's range in seconds; missing means the start / the end of the video.
``label`` (optional)
    ground truth, copied to the output.

Other columns are kept for ``--video-template``: with a template, the URI is
``template.format(**row)``, where a field is the row's text as written (``{video_id}`` of
``000123`` stays ``000123``) unless its format spec asks for a number (``{time_start:06d}``,
``{x:.1f}``, ``{n:05}``): then the text is read as a number, an integer spec taking only
integral values (``12`` or ``12.0``, not ``12.5``). So the official Kinetics CSVs
(``label,youtube_id,time_start,time_end,split``) work with
``gs://bucket/k400/{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``. With
``ignore_times`` the times are not used to cut the video (files already trimmed): the whole
file is scored and ``start_sec``/``end_sec`` are null in the output.

Row numbers in sources (``main.csv:29``) are the file's line numbers (:func:`read_rows`).

Text columns (``video_uri``, ``clip_id``, ``label``, the fields a template uses) take
text or a number (JSON ``4`` is the text ``"4"``, as written); an object, a list (JSON,
or a Parquet struct/list/map column), true/false or bytes is not text (:func:`_text`).

A row that cannot become a clip (no URI, unparseable or inverted times, a text column
that is not text, a template field the row lacks or that is not the number its spec
asks for) becomes a :class:`ManifestError`: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import functools
import hashlib
import io
import json
import math
import numbers
import re
import string
from typing import Any, Iterator, Mapping

from beam_i3d.errors import ManifestError

URI_COLUMNS = ("video_uri", "path", "video")
START_COLUMNS = ("start_sec", "time_start", "start")
END_COLUMNS = ("end_sec", "time_end", "end")
FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}


@dataclasses.dataclass(frozen=True)
class ClipRequest:
    """One clip to score, as the manifest asked for it."""

    clip_id: str
    video_uri: str
    start_sec: float | None  # None: from the start
    end_sec: float | None    # None: to the end (capped by max_seconds)
    label: str | None
    source: str              # manifest file and row, e.g. "gs://b/m.csv:17"
    order: tuple[str, int] = ("", 0)  # (manifest, row): decides which repeat is first
    row_key: str = ""        # the manifest row it settles (beam_i3d.job.row_keys), once keyed
    window: tuple | None = None  # windowed runs: (index, start_sec, end_sec, count), see windows.py


@dataclasses.dataclass(frozen=True)
class ManifestOptions:
    video_template: str | None = None
    ignore_times: bool = False


def manifest_format(path: str) -> str:
    """'csv', 'jsonl' or 'parquet' from the file name; raises ManifestError otherwise."""
    lower = path.lower()
    for suffix, fmt in FORMATS.items():
        if lower.endswith(suffix):
            return fmt
    raise ManifestError(
        f"{path}: unknown manifest format; name it .csv, .jsonl (.ndjson, .json) or "
        ".parquet (.pq)")


def read_rows(path: str, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of one manifest file's bytes, so that ``path:number`` is
    where an editor shows the row. CSV: the line where the record starts, counting the
    header line and the lines of quoted fields that span lines (the first data row of a
    plain file is line 2); JSON Lines: the row's line (blank lines are skipped but
    counted); Parquet, which has no lines: the row's index from 1.

    Text must be UTF-8 (a byte order mark is allowed; CRLF line ends work); anything
    else, and CSV that the csv module cannot parse (a NUL byte, a field over its size
    limit), raises ManifestError naming the file and the place.
    """
    fmt = manifest_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        for number, row in enumerate(table.to_pylist(), start=1):
            yield number, row
        return
    text = _decode_text(path, data)
    if fmt == "csv":
        yield from _csv_rows(path, text)
        return
    # Split on "\n" only: str.splitlines() would also split at U+2028, U+0085 and other
    # characters that JSON strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, {"__error__": f"not valid JSON: {e}"}
            continue
        if not isinstance(row, dict):
            yield number, {"__error__": "a JSON Lines row must be an object"}
            continue
        yield number, row


def _decode_text(path: str, data: bytes) -> str:
    """UTF-8 text without its byte order mark; ManifestError for anything else."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(f"{path}: the file is UTF-16 text; save the manifest as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ManifestError(
            f"{path}: not valid UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
            f"(line {line}); save the manifest as UTF-8") from None


def _csv_rows(path: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV file with a header line, as csv.DictReader makes them (missing
    fields are None, extra ones dropped, names stripped), each with its first line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    while True:
        first_line = reader.line_num + 1  # lines read so far, plus the record's own
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ManifestError(f"{path}:{first_line}: not valid CSV: {e}") from None
        if not record:  # a blank line
            continue
        if header is None:
            header = [name.strip() for name in record]
            continue
        row = dict(zip(header, record))
        for name in header[len(record):]:
            row.setdefault(name, None)
        yield first_line, row


def _first(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


_NUMBER_TYPES = (numbers.Real, decimal.Decimal)  # Parquet decimals come as Decimal
# A number of seconds as text: decimal, optionally with an exponent (no "1_000", no hex).
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_seconds(value: Any, column: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not _DECIMAL.match(value.strip()):
            if value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
                raise ManifestError(f"{column} {value!r} must be a finite number >= 0")
            raise ManifestError(f"{column} {value!r} is not a number of seconds")
    elif isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        # JSON true/false, objects, lists: not times (float(True) would be 1 s).
        raise ManifestError(f"{column} {value!r} is not a number of seconds")
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ManifestError(f"{column} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ManifestError(f"{column} {value!r} must be a finite number >= 0")
    return seconds


def _text(value: Any, column: str) -> str | None:
    """A text column's value as text (None stays None): strings as they are, numbers as
    written (``4`` -> ``"4"``); ManifestError naming ``column`` for anything else (an
    object or list would otherwise become its Python repr)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        what = "an object" if isinstance(value, dict) else "a list"
    elif isinstance(value, bool):
        what = "true/false"
    else:
        what = f"a {type(value).__name__} value"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ManifestError(f"{column} is {what} ({shown}), not text")


_INT = re.compile(r"^[+-]?\d+$")
_INT_TYPES = set("bcdoxX")
_FLOAT_TYPES = set("eEfFgG%")


class _TemplateFormatter(string.Formatter):
    """``str.format`` for ``--video-template``: a field is the row's text as written
    (``{video_id}`` of ``000123`` is ``000123``), unless its format spec asks for a number
    (``{time_start:06d}``, ``{x:.1f}``, ``{n:05}``): then the text is read as one, an
    integer spec taking only integral values (``"12"``, ``"12.0"``)."""

    def get_value(self, key, args, kwargs):
        if isinstance(key, int):
            raise ManifestError(
                f"--video-template fields must name columns, not positions ({{{key}}})")
        if key not in kwargs:
            raise ManifestError(f"--video-template needs column {key!r}, which the row lacks")
        value = kwargs[key]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ManifestError(f"--video-template needs column {key!r}, which is empty in the row")
        if not isinstance(value, (str, bool)):  # true/false: format_field says why
            _text(value, f"--video-template column {key!r}")  # no objects, lists
        return value

    def format_field(self, value, format_spec):
        kind = _spec_number_kind(format_spec)
        if kind is not None:
            value = _template_number(value, kind, format_spec)
        elif isinstance(value, bool):
            raise ManifestError(f"--video-template {{:{format_spec}}} needs text or a "
                                f"number, got {value!r}")
        return format(value, format_spec)


# Python's format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type].
_SPEC = re.compile(r"^(?:.?(?P<align>[<>=^]))?(?P<sign>[-+ ])?(?P<z>z)?(?P<alt>#)?(?P<zero>0)?"
                   r"\d*(?P<grouping>[,_])?(?:\.\d+)?(?P<type>[a-zA-Z%])?$")


@functools.lru_cache(maxsize=256)
def _spec_number_kind(spec: str) -> str | None:
    """'int', 'float', 'number' (either) or None (the text as written) for a format spec."""
    match = _SPEC.match(spec)
    if not spec or match is None:
        return None  # no spec, or one that format() itself will refuse
    kind = match["type"]
    if kind in _INT_TYPES:
        return "int"
    if kind in _FLOAT_TYPES:
        return "float"
    if kind == "n":
        return "number"
    # No type: sign, "=" alignment, zero padding, "#" and digit grouping exist only for
    # numbers (format("15", "06") would give "150000", not "000015").
    if kind is None and (match["align"] == "=" or any(
            match[g] for g in ("sign", "z", "alt", "zero", "grouping"))):
        return "number"
    return None


def _template_number(value: Any, kind: str, spec: str) -> int | float:
    """The number ``value`` stands for, for a spec that asks for ``kind``."""
    def fail(what):
        raise ManifestError(f"--video-template {{:{spec}}} needs {what}, got {value!r}")

    if isinstance(value, bool):
        fail("a number")
    if isinstance(value, str):
        text = value.strip()
        if _INT.match(text):
            number: int | float = int(text)
        else:
            try:
                number = float(text)
            except ValueError:
                fail("a number")
    elif isinstance(value, _NUMBER_TYPES):
        number = value
    else:
        fail("a number")
    if kind == "float":
        return float(number)
    if isinstance(number, int):
        return number
    number = float(number)
    if not number.is_integer():
        if kind == "number":
            return number
        fail("an integer")
    return int(number)


_FORMATTER = _TemplateFormatter()
_PLAIN_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.lru_cache(maxsize=64)
def _compiled_template(template: str):
    """The template as ``(literal, column, spec)`` parts when every field is a plain
    column name without a conversion or nested spec; None otherwise (then the general
    formatter runs). Parsing once per template, not per row, keeps a 650,000-row
    manifest's URIs to a few seconds."""
    parts = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if field is not None and (conversion or not _PLAIN_FIELD.match(field)
                                  or "{" in (spec or "")):
            return None
        parts.append((literal, field, spec or ""))
    return tuple(parts)


@functools.lru_cache(maxsize=4096)
def _format_text(value: str, spec: str) -> str:
    """``format_field`` of a text value, remembered: a manifest's times, splits and
    labels repeat, and reading them as numbers is most of a URI's cost."""
    return _FORMATTER.format_field(value, spec)


def _format_template(template: str, row: Mapping[str, Any]) -> str:
    try:
        try:
            parts = _compiled_template(template)
        except ValueError:
            parts = None  # a malformed template: the general formatter says why
        if parts is None:
            return _FORMATTER.vformat(template, (), {k: v for k, v in row.items()
                                                     if k is not None})
        out = []
        for literal, field, spec in parts:
            out.append(literal)
            if field is not None:
                # (a field names a column, never None: the row itself will do for kwargs)
                value = _FORMATTER.get_value(field, (), row)
                out.append(_format_text(value, spec) if type(value) is str
                           else _FORMATTER.format_field(value, spec))
        return "".join(out)
    except ManifestError:
        raise
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as e:
        raise ManifestError(f"--video-template cannot format this row: {e}") from None


def derive_clip_id(video_uri: str, start_sec: float | None, end_sec: float | None) -> str:
    """A deterministic clip id: the video's file name and the first 12 hex digits of the
    sha256 of ``uri|start|end`` (times as written by ``repr`` of float, or empty)."""
    def fmt(t):
        return "" if t is None else repr(float(t))

    digest = hashlib.sha256(f"{video_uri}|{fmt(start_sec)}|{fmt(end_sec)}".encode()).hexdigest()
    name = video_uri.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}#{digest[:12]}"


def parse_row(row: Mapping[str, Any], source: str, options: ManifestOptions,
              order: tuple[str, int] = ("", 0)) -> ClipRequest:
    """Turn one manifest row into a :class:`ClipRequest`; raises ManifestError."""
    if "__error__" in row:
        raise ManifestError(row["__error__"])
    start = _parse_seconds(_first(row, START_COLUMNS), "start time")
    end = _parse_seconds(_first(row, END_COLUMNS), "end time")
    if start is not None and end is not None and end <= start:
        raise ManifestError(f"end time {end} is not after start time {start}")
    if options.video_template:
        uri = _format_template(options.video_template, row)
    else:
        uri = _first(row, URI_COLUMNS)
        if uri is None:
            raise ManifestError(
                "no video URI: the row needs one of the columns " + ", ".join(URI_COLUMNS)
                + " (or use --video-template)")
        if not isinstance(uri, str):
            uri = _text(uri, next(c for c in URI_COLUMNS if row.get(c) is uri))
        uri = uri.strip()
    if options.ignore_times:
        start = end = None
    clip_id = _text(row.get("clip_id"), "clip_id")
    clip_id = clip_id.strip() if clip_id else None
    label = _text(row.get("label"), "label")
    label = label.strip() if label else None
    return ClipRequest(
        clip_id=clip_id or derive_clip_id(uri, start, end),
        video_uri=uri,
        start_sec=start,
        end_sec=end,
        label=label,
        source=source,
        order=order,
    )
