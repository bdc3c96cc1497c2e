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
``template.format(**row)``, with numeric-looking strings turned into int or float first, so
the official Kinetics CSVs (``label,youtube_id,time_start,time_end,split``) work with
``gs://bucket/k400/{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``. With
``ignore_times`` the times are not used to cut the video (files already trimmed): the whole
file is scored and ``start_sec``/``end_sec`` are null in the output.

A row that cannot become a clip (no URI, unparseable or inverted times, a template field
the row lacks) becomes a :class:`ManifestError`: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
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
    row_key: str = ""        # the manifest row it settles (beam_i3d.row_keys), once keyed


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
    """``(row number, row)`` of one manifest file's bytes. Row numbers count from 1 for
    the first data row (for CSV, the header is row 0 and the numbers are line numbers
    minus one only where no field spans lines)."""
    fmt = manifest_format(path)
    if fmt == "csv":
        text = data.decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            return
        for number, row in enumerate(reader, start=1):
            yield number, {k.strip(): v for k, v in row.items() if k is not None}
    elif fmt == "jsonl":
        for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
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
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        for number, row in enumerate(table.to_pylist(), start=1):
            yield number, row


def _first(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def _parse_seconds(value: Any, column: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{column} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ManifestError(f"{column} {value!r} must be a finite number >= 0")
    return seconds


_INT = re.compile(r"^[+-]?\d+$")


def _template_value(value: Any) -> Any:
    """CSV gives strings: make numeric-looking ones numbers so ``{x:06d}`` works."""
    if isinstance(value, str):
        text = value.strip()
        if _INT.match(text):
            return int(text)
        try:
            return float(text)
        except ValueError:
            return value
    return value


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
        fields = {k: _template_value(v) for k, v in row.items() if k is not None}
        try:
            uri = options.video_template.format(**fields)
        except KeyError as e:
            raise ManifestError(
                f"--video-template needs column {e.args[0]!r}, which the row lacks") from None
        except (ValueError, IndexError) as e:
            raise ManifestError(f"--video-template cannot format this row: {e}") from None
    else:
        uri = _first(row, URI_COLUMNS)
        if uri is None:
            raise ManifestError(
                "no video URI: the row needs one of the columns " + ", ".join(URI_COLUMNS)
                + " (or use --video-template)")
        uri = str(uri).strip()
    if options.ignore_times:
        start = end = None
    clip_id = row.get("clip_id")
    clip_id = str(clip_id).strip() if clip_id not in (None, "") else None
    label = row.get("label")
    label = str(label).strip() if label not in (None, "") else None
    return ClipRequest(
        clip_id=clip_id or derive_clip_id(uri, start, end),
        video_uri=uri,
        start_sec=start,
        end_sec=end,
        label=label,
        source=source,
        order=order,
    )


def error_row_identity(row: Mapping[str, Any], options: ManifestOptions
                       ) -> tuple[str | None, str | None]:
    """Best-effort (clip_id, video_uri) of a row that failed to parse, for its error."""
    uri = _first(row, URI_COLUMNS)
    clip_id = row.get("clip_id")
    return (str(clip_id) if clip_id not in (None, "") else None,
            str(uri) if uri is not None else None)
