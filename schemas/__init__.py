"""The output schemas of beam-i3d, defined once (pyarrow), versioned.

A run writes two Parquet datasets, ``DIR/scores/*.parquet`` and ``DIR/errors/*.parquet``;
every manifest row ends in exactly one of them. Each file carries the run's metadata
(:func:`run_metadata`) as Parquet key-value metadata under ``beam_i3d.*`` keys.

The schemas do not change with the options of a run: columns a run did not compute
(``flow_logits`` of an RGB-only run, embeddings under ``--no-embeddings``) are null, so
the outputs of different runs concatenate and load into one BigQuery table.

``python -m schemas bigquery scores|errors`` prints the BigQuery schema (JSON) for
``bq load --source_format=PARQUET --parquet_enable_list_inference``.

Every row of both also names the manifest row it settles (``row_key``) and the run that
wrote it (``run_id``). A run writes its rows in shards as it goes, so a row can appear
twice where a runner retried work; :mod:`beam_i3d.job.results` (and the manual's read recipe, docs/outputs.md)
keeps one row per ``row_key``: the latest run's, and a score over an error.

Windowed runs (``score --window``) write, instead of ``scores``, ``DIR/windows`` (one row
per window: the scores columns plus ``window_index``, ``window_start_sec``,
``window_end_sec``; ``row_key`` is ``<row key>@w<index>``), ``DIR/timelines`` (one row
per video: the segments where the top-1 label stays the same) and ``DIR/plans`` (one
row per manifest row: how many windows it was planned into, so that a lost window is
detected); errors stay in ``DIR/errors``.

Version history: 1 (first release); 2 (``row_key`` and ``run_id`` in both outputs);
3 (windowed runs: ``windows``, ``timelines`` and ``plans``; ``scores`` and ``errors``
unchanged); 4 (frame windows, ``--window-frames``/``--fps``: ``plans`` gains ``fps``,
``variable_frame_rate``, ``window_frames``, ``stride_frames``, ``num_frames`` and
``looped``, all nullable, and its ``window_sec``/``stride_sec`` become nullable; the
features index gains ``window_frames``, ``stride_frames``, ``looped`` and
``variable_frame_rate``; shards of version 3 read as before, the new columns absent);
5 (``score --crops five|ten``: ``scores`` and ``windows`` gain ``rgb_crop_embeddings``
and ``flow_crop_embeddings``, nullable, null under ``--crops center``; the features
index's ``crops`` becomes the number of crops, an int32; shards of versions 3 and 4
read as before, the new columns absent).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

SCHEMA_VERSION = "5"
METADATA_PREFIX = "beam_i3d."
# Versions whose files read as one dataset: each later one only adds nullable columns
# (pyarrow's promote_options="default" and DuckDB's union_by_name fill them with null),
# so an output may hold shards of several of them, and a run may resume an output
# written by an earlier one of them.
READ_TOGETHER = ("3", "4", "5")


def read_together(a: str, b: str) -> bool:
    """Whether files of schema versions ``a`` and ``b`` belong in one output."""
    return a == b or (a in READ_TOGETHER and b in READ_TOGETHER)

TOP_K_ENTRY = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),
    pa.field("probability", pa.float32(), nullable=False),
    pa.field("logit", pa.float32(), nullable=False),
])
FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=False))
FLOAT64_LIST = pa.list_(pa.field("element", pa.float64(), nullable=False))

_SCORES_FIELDS = [  # SCORES_SCHEMA's columns before version 5
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_uri", pa.string(), nullable=False),
    pa.field("start_sec", pa.float64()),        # null: from the start of the video
    # The end of the range scored: the row's end, or where the video's frames end if
    # they end first (or the max_seconds cap); null: to the end (capped by max_seconds).
    pa.field("end_sec", pa.float64()),
    pa.field("label", pa.string()),             # ground truth from the manifest, if any
    # real 25-fps frames, before looping (frame windows: at the rate used, the plan's fps)
    pa.field("num_frames", pa.int32(), nullable=False),
    pa.field("predicted_label", pa.string(), nullable=False),
    pa.field("predicted_index", pa.int32(), nullable=False),
    pa.field("predicted_probability", pa.float32(), nullable=False),
    pa.field("top_k", pa.list_(pa.field("element", TOP_K_ENTRY, nullable=False)),
             nullable=False),                   # best first
    pa.field("logits", FLOAT_LIST, nullable=False),  # joint: sum over the scored streams
    pa.field("rgb_logits", FLOAT_LIST),
    pa.field("flow_logits", FLOAT_LIST),
    pa.field("rgb_embedding", FLOAT_LIST),      # Mixed_5c mean, 1024 values
    pa.field("flow_embedding", FLOAT_LIST),
    pa.field("row_key", pa.string(), nullable=False),  # the manifest row (see beam_i3d.job.row_keys)
    pa.field("run_id", pa.string(), nullable=False),   # the run that wrote the row
]
# score --crops five|ten (version 5): each crop's embedding, crops x 1024 values in one
# list, crop after crop in beam_i3d.media.crops' order (``<stream>_embedding`` is then
# their mean, and the logits the mean of the crops'); null under --crops center.
CROP_FIELDS = [
    pa.field("rgb_crop_embeddings", FLOAT_LIST),
    pa.field("flow_crop_embeddings", FLOAT_LIST),
]
SCORES_SCHEMA = pa.schema(_SCORES_FIELDS + CROP_FIELDS)

ERRORS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string()),           # null only where the row gave nothing to derive it
    pa.field("video_uri", pa.string()),         # null for a manifest row without one
    pa.field("stage", pa.string(), nullable=False),       # manifest | decode | inference
    pa.field("error_type", pa.string(), nullable=False),  # class name, e.g. CorruptVideo
    pa.field("message", pa.string(), nullable=False),
    pa.field("source", pa.string()),            # manifest file and line number, where known
    pa.field("row_key", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
])

WINDOW_FIELDS = [
    pa.field("window_index", pa.int32(), nullable=False),     # k = 0, 1, ... in the row
    pa.field("window_start_sec", pa.float64(), nullable=False),  # start + k * stride
    pa.field("window_end_sec", pa.float64(), nullable=False),    # its end (capped at the row's)
    pa.field("num_windows", pa.int32(), nullable=False),      # windows the row was planned into
]
# The scores columns (start_sec/end_sec: the manifest row's range as scored, as the
# plan's range_start_sec/range_end_sec where the row gives them) plus the window's.
# (the crop columns last, as in SCORES_SCHEMA: the columns of version 4 keep their places)
WINDOWS_SCHEMA = pa.schema(_SCORES_FIELDS + WINDOW_FIELDS + CROP_FIELDS)

SEGMENT = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("label_index", pa.int32(), nullable=False),
    # Within the time its windows' frames stand for (a window: [start, start +
    # num_frames / 25); a frame window: its own [start, end)); a segment never spans time no window scored (gaps between
    # windows, failed windows): segments are split there.
    pa.field("start_sec", pa.float64(), nullable=False),
    pa.field("end_sec", pa.float64(), nullable=False),
    pa.field("mean_probability", pa.float64(), nullable=False),  # of its windows' top-1
    pa.field("num_windows", pa.int32(), nullable=False),
    pa.field("first_window", pa.int32(), nullable=False),
    pa.field("last_window", pa.int32(), nullable=False),
])

TIMELINES_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_uri", pa.string(), nullable=False),
    pa.field("label", pa.string()),                   # ground truth from the manifest, if any
    pa.field("num_windows", pa.int32(), nullable=False),      # planned
    pa.field("windows_scored", pa.int32(), nullable=False),   # of them, in the segments
    pa.field("start_sec", pa.float64(), nullable=False),      # first segment's start
    pa.field("end_sec", pa.float64(), nullable=False),        # where the last frames end
    pa.field("segments", pa.list_(pa.field("element", SEGMENT, nullable=False)),
             nullable=False),
    pa.field("row_key", pa.string(), nullable=False),  # the manifest row
    pa.field("run_id", pa.string(), nullable=False),
])

PLANS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_uri", pa.string(), nullable=False),
    pa.field("duration_sec", pa.float64()),               # as the container declares it
    pa.field("range_start_sec", pa.float64(), nullable=False),
    # The row's end, or where the video's frames really end if first (from the packets,
    # whatever duration_sec says).
    pa.field("range_end_sec", pa.float64(), nullable=False),
    pa.field("window_sec", pa.float64()),                 # null: frame windows
    pa.field("stride_sec", pa.float64()),
    pa.field("num_windows", pa.int32(), nullable=False),
    pa.field("row_key", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    # Frames per second sampled: the recipe's 25, --fps N, or under --fps native the
    # video's own rate (its frames over their span of times); null only before version 4.
    pa.field("fps", pa.float64()),
    # --fps native: whether the frame durations (steps between packet times) spread
    # over 10 % of their median; null where not measured (resampled runs).
    pa.field("variable_frame_rate", pa.bool_()),
    pa.field("window_frames", pa.int32()),                # frame windows: W and S
    pa.field("stride_frames", pa.int32()),
    pa.field("num_frames", pa.int64()),                   # frames in the range (N)
    pa.field("looped", pa.bool_()),                       # N < W: one window, looped to W
])

# ``beam-i3d features``: DIR/index.parquet, one row per manifest row of the run exported
# (beam_i3d.features): where its array is, its shape, and its windows.
FEATURES_INDEX_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string()),           # null only for a manifest row without one
    pa.field("video_uri", pa.string()),
    pa.field("file", pa.string()),              # name in DIR; null where not written
    pa.field("status", pa.string(), nullable=False),  # written | written_with_gaps | gaps | failed
    pa.field("num_windows", pa.int32(), nullable=False),   # T: lines of the array
    pa.field("feature_dim", pa.int32(), nullable=False),   # D: 1024 per stream, RGB first
    pa.field("windows_scored", pa.int32(), nullable=False),
    pa.field("missing_windows", pa.list_(pa.field("element", pa.int32(), nullable=False)),
             nullable=False),                   # window indices without features (NaN lines)
    pa.field("window_start_sec", FLOAT64_LIST, nullable=False),
    pa.field("window_end_sec", FLOAT64_LIST, nullable=False),  # NaN for a missing window
    pa.field("fps", pa.float64(), nullable=False),           # frames per second sampled
    pa.field("window_sec", pa.float64()),                    # null: a clip, or frame windows
    pa.field("stride_sec", pa.float64()),
    pa.field("window_frames", pa.int32()),                   # frame windows: W and S frames
    pa.field("stride_frames", pa.int32()),
    pa.field("looped", pa.bool_()),                          # one window looped to W (N < W)
    pa.field("variable_frame_rate", pa.bool_()),             # --fps native: a VFR source
    pa.field("crops", pa.int32(), nullable=False),           # C: 1, or 5/10 ([T, C, D])
    pa.field("streams", pa.string(), nullable=False),        # rgb | flow | rgb,flow
    pa.field("weights", pa.string(), nullable=False),        # stream:identity, ...
    pa.field("error", pa.string()),                          # why not (wholly) written
    pa.field("row_key", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),         # the export's run
])

STAGES = ("manifest", "decode", "inference")


def with_run_metadata(schema: pa.Schema, metadata: Mapping[str, Any]) -> pa.Schema:
    """The schema with ``beam_i3d.*`` file metadata; non-string values become JSON."""
    encoded = {
        f"{METADATA_PREFIX}{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
    }
    encoded[f"{METADATA_PREFIX}schema_version"] = SCHEMA_VERSION
    return schema.with_metadata(encoded)


def read_run_metadata(schema: pa.Schema) -> dict[str, str]:
    """The ``beam_i3d.*`` metadata of a Parquet file's schema, prefix removed."""
    raw = schema.metadata or {}
    return {k.decode()[len(METADATA_PREFIX):]: v.decode() for k, v in raw.items()
            if k.decode().startswith(METADATA_PREFIX)}


_BQ_TYPES = {
    pa.string(): "STRING",
    pa.float64(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.int32(): "INTEGER",
    pa.int64(): "INTEGER",
    pa.bool_(): "BOOLEAN",
}


def _bigquery_field(field: pa.Field) -> dict:
    mode = "NULLABLE" if field.nullable else "REQUIRED"
    ftype = field.type
    if pa.types.is_list(ftype):
        mode, ftype = "REPEATED", ftype.value_type
    out: dict[str, Any] = {"name": field.name, "mode": mode}
    if pa.types.is_struct(ftype):
        out["type"] = "RECORD"
        out["fields"] = [_bigquery_field(ftype.field(i)) for i in range(ftype.num_fields)]
    else:
        out["type"] = _BQ_TYPES[ftype]
    return out


def bigquery_schema(schema: pa.Schema) -> list[dict]:
    """The BigQuery JSON schema of a Parquet schema (lists become REPEATED fields)."""
    return [_bigquery_field(f) for f in schema]


SCHEMAS = {"scores": SCORES_SCHEMA, "errors": ERRORS_SCHEMA, "windows": WINDOWS_SCHEMA,
           "timelines": TIMELINES_SCHEMA, "plans": PLANS_SCHEMA,
           "features_index": FEATURES_INDEX_SCHEMA}
