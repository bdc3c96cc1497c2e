"""One array per video from a run's rows (pure: no Beam, no I/O).

A ``score`` run settles each manifest row by scores (one per clip, or one per window
``R@w<k>`` of a windowed run), errors, and, when windowed, a plan (how many windows the
row has). :func:`assemble` turns what one row settled into the array research code
reads: float32 ``[T, D]``, one line per window in order, D = 1024 per stream with RGB
first (two streams: 2,048), where each stream's 1024 values are its Mixed_5c
activations averaged over time and space (the ``*_embedding`` columns). A run scored
with ``--crops five|ten`` gives ``[T, C, D]`` instead, C = 5 or 10 crops in
:mod:`beam_i3d.media.crops`' order, each crop's D values (RGB's 1024 then flow's) from
the ``*_crop_embeddings`` columns.

File names: :func:`file_stem` keeps ``[A-Za-z0-9._-]`` and percent-encodes every other
byte of the clip_id's UTF-8 (``%`` and a leading ``.`` included), so every name is a
safe, reversible file name (:func:`clip_id_of_stem`); a name that would be longer than
:data:`MAX_STEM` bytes is cut and given a digest of the whole id instead
(``<prefix>~<16 hex>``), which only the index maps back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote

import numpy as np

from beam_i3d.job.windows import parse_window_key

EMBEDDING_DIM = 1024  # Mixed_5c channels of one stream
MAX_STEM = 200  # bytes: file systems allow 255, leaving room for the extension
# Bytes kept as they are in file names; every other byte is %XX (so is a leading dot).
_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def file_stem(clip_id: str) -> str:
    """A safe file name (without extension) for ``clip_id`` (see module doc)."""
    raw = clip_id.encode("utf-8")
    stem = "".join(chr(b) if b in _KEEP and not (i == 0 and b == 0x2E) else f"%{b:02X}"
                   for i, b in enumerate(raw))
    if len(stem) <= MAX_STEM:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cut = stem[:MAX_STEM - 17]
    escape = cut.rfind("%", len(cut) - 2)
    return f"{cut[:escape] if escape >= 0 else cut}~{digest}"  # never half an escape


def clip_id_of_stem(stem: str) -> str | None:
    """The clip_id a :func:`file_stem` encodes; None for a cut name (see the index)."""
    return None if "~" in stem else unquote(stem, errors="strict")


@dataclasses.dataclass
class RowParts:
    """What a run settled for one manifest row: its scored windows (or clip) by index,
    its errors by window index (``None``: the row's own error) and its plan."""

    row_key: str
    clip_id: str | None = None
    video_uri: str | None = None
    scores: dict[int, dict] = dataclasses.field(default_factory=dict)
    errors: dict[int | None, dict] = dataclasses.field(default_factory=dict)
    num_windows: int | None = None  # planned windows; None: no plan (clips, or failed)
    plan_run: str = ""
    # From the plan (schema version 4 on; None where not recorded): the frames per second
    # sampled (under --fps native the video's own), a looped short video, a VFR source.
    fps: float | None = None
    looped: bool | None = None
    variable_frame_rate: bool | None = None


def base_key(key: str, windowed: bool) -> tuple[str, int | None]:
    """``(row_key, window index)`` of a settled key; index None for a row's own key
    (a clip, or a windowed row's error without windows)."""
    parsed = parse_window_key(key) if windowed else None
    return parsed if parsed else (key, None)


def collect(row_key: str, entries: Iterable[tuple[str, dict]], windowed: bool) -> RowParts:
    """One row's entries (``("score" | "error" | "plan", record)``) -> RowParts, by the
    read rule: per window, a score over an error, the latest run's of each."""
    parts = RowParts(row_key)
    for kind, record in entries:
        parts.clip_id = parts.clip_id or record.get("clip_id")
        parts.video_uri = parts.video_uri or record.get("video_uri")
        run = record.get("run_id") or ""
        if kind == "plan":
            if run >= parts.plan_run:
                parts.num_windows, parts.plan_run = int(record["num_windows"]), run
                parts.fps = record.get("fps")
                parts.looped = record.get("looped")
                parts.variable_frame_rate = record.get("variable_frame_rate")
            continue
        _, index = base_key(record["row_key"], windowed)
        if kind == "score":
            key = index if windowed else 0
            if key is None:
                continue
            held = parts.scores.get(key)
            if held is None or run > (held.get("run_id") or ""):
                parts.scores[key] = record
        else:
            held = parts.errors.get(index)
            if held is None or run > (held.get("run_id") or ""):
                parts.errors[index] = record
    return parts


@dataclasses.dataclass
class Assembled:
    """A row's array (None where it is not written) and its index entry."""

    features: np.ndarray | None
    index: dict[str, Any]


def assemble(parts: RowParts, streams: Sequence[str], windowed: bool,
             allow_gaps: bool = False, crops: int = 1) -> Assembled:
    """The row's float32 ``[T, 1024 * len(streams)]`` array (``crops`` > 1: ``[T, crops,
    1024 * len(streams)]``; see module doc) and its index entry. T is the planned windows
    (1 for a clip). A window without a score is a gap: the row is not written
    (``status`` "gaps", its windows named), or, with ``allow_gaps``, written with NaN in
    those lines (``status`` "written_with_gaps"). A row without windows (its video
    failed before planning) is ``failed``."""
    planned = parts.num_windows if windowed else 1
    index: dict[str, Any] = {
        "row_key": parts.row_key, "clip_id": parts.clip_id, "video_uri": parts.video_uri,
        "num_windows": planned, "windows_scored": 0, "missing_windows": [],
        "window_start_sec": [], "window_end_sec": [], "error": None, "status": "failed",
        "looped": parts.looped, "variable_frame_rate": parts.variable_frame_rate,
    }
    if parts.fps is not None:  # the rate this row was sampled at (else the recipe's)
        index["fps"] = float(parts.fps)
    if planned is None or (not windowed and 0 not in parts.scores):
        own = parts.errors.get(None)
        index["num_windows"] = 0
        index["error"] = (f"{own['error_type']}: {own['message']}" if own else
                          "no windows were planned and no error was recorded")
        return Assembled(None, index)
    dim = EMBEDDING_DIM * len(streams)
    features = np.full((planned,) + ((crops,) if crops > 1 else ()) + (dim,), np.nan,
                       np.float32)
    starts, ends, missing = [], [], []
    for k in range(planned):
        record = parts.scores.get(k if windowed else 0)
        if record is None:
            missing.append(k)  # its times are not known here: NaN
            starts.append(math.nan)
            ends.append(math.nan)
            continue
        for s, stream in enumerate(streams):
            column = f"{stream}_crop_embeddings" if crops > 1 else f"{stream}_embedding"
            values = record.get(column)
            if values is None:
                raise ValueError(f"{parts.row_key}: the {stream} embedding was not written "
                                 "(a run with --no-embeddings?)")
            if crops > 1:  # crops x 1024, crop after crop
                values = np.asarray(values, np.float32).reshape(crops, EMBEDDING_DIM)
            features[k, ..., s * EMBEDDING_DIM:(s + 1) * EMBEDDING_DIM] = values
        if windowed:
            starts.append(float(record["window_start_sec"]))
            ends.append(float(record["window_end_sec"]))
        else:
            starts.append(_or_nan(record.get("start_sec")))
            ends.append(_or_nan(record.get("end_sec")))
    index.update(windows_scored=planned - len(missing), missing_windows=missing,
                 window_start_sec=starts, window_end_sec=ends)
    if missing:
        shown = ", ".join(_window_error(parts, k) for k in missing[:5])
        index["error"] = (f"{len(missing)} of {planned} windows not scored: {shown}"
                          + (" ..." if len(missing) > 5 else ""))
        if not allow_gaps:
            index["status"] = "gaps"
            return Assembled(None, index)
        index["status"] = "written_with_gaps"
        return Assembled(features, index)
    index["status"] = "written"
    return Assembled(features, index)


def _or_nan(value) -> float:
    return math.nan if value is None else float(value)


def _window_error(parts: RowParts, k: int) -> str:
    error = parts.errors.get(k)
    return f"window {k} ({error['error_type']})" if error else f"window {k} (missing)"


def index_entry_fields(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The index columns every row shares, from the run's recipe (recipe.json). Under
    ``--fps native`` the recipe's fps is "native": each row's ``fps`` is then its
    plan's (the video's own rate; NaN here until the row's plan gives it)."""
    from beam_i3d.media.crops import crop_count

    streams = recipe.get("streams", "rgb").split(",")
    fps = recipe.get("fps", 25)
    return {
        "fps": math.nan if fps == "native" else float(fps),
        "window_sec": recipe.get("window_sec"),
        "stride_sec": recipe.get("stride_sec"),
        "window_frames": recipe.get("window_frames"),
        "stride_frames": recipe.get("stride_frames"),
        "crops": crop_count(recipe.get("crops", "center")),  # C of [T, C, D]; 1: [T, D]
        "streams": ",".join(streams),
        "weights": ",".join(f"{s}:{recipe.get(f'{s}_weights', '?')}" for s in streams),
    }
