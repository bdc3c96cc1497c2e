"""The ``features`` job: a score run's shards in, one array file per manifest row out.

    shard paths -> Reshuffle -> read each shard's rows, keyed by manifest row
      -> GroupByKey -> assemble and write DIR/<stem>.<ext> -> index rows
      -> WriteShards(DIR/.index-parts)   (joined into DIR/index.parquet by the launcher)

A row's windows may sit in many shards (workers, resumed runs), so they meet at a
GroupByKey; its array is at most T x 2048 float32 (a 3-hour video in 1-s windows:
88 MB; ``--crops ten``: T x 10 x 2048, ten times that), and nothing else is held per
row. The numeric work is in :mod:`beam_i3d.features.arrays`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_i3d import fileio
from beam_i3d.features.arrays import assemble, collect, file_stem
from beam_i3d.job.progress import NAMESPACE

FORMATS = {"npy": ".npy", "npz": ".npz", "hdf5": ".h5"}
INDEX_PARTS = ".index-parts"  # under DIR, removed once index.parquet is written
_SCORE_COLUMNS = ("row_key", "clip_id", "video_uri", "run_id", "start_sec", "end_sec",
                  "window_start_sec", "window_end_sec", "rgb_embedding", "flow_embedding",
                  "rgb_crop_embeddings", "flow_crop_embeddings")
_COLUMNS = {
    "score": _SCORE_COLUMNS,
    "error": ("row_key", "clip_id", "video_uri", "run_id", "error_type", "message"),
    "plan": ("row_key", "clip_id", "video_uri", "run_id", "num_windows", "fps", "looped",
             "variable_frame_rate"),
}


@dataclasses.dataclass(frozen=True)
class FeaturesOptions:
    run: str  # the score output read
    out: str  # where the arrays and index.parquet go
    windowed: bool
    streams: tuple[str, ...]
    shared: dict  # index columns every row shares (arrays.index_entry_fields)
    format: str = "npy"
    allow_gaps: bool = False
    run_id: str = ""


def read_shard(source: tuple[str, str], windowed: bool):
    """``(kind, path)`` -> ``(row_key, (kind, record))`` for each row of the shard."""
    from beam_i3d.features.arrays import base_key
    from beam_i3d.job.results import read_columns

    kind, path = source
    table = read_columns(path, _COLUMNS[kind])
    for record in table.to_pylist():
        key = record.get("row_key") or record.get("clip_id")
        if key is None:
            continue
        yield base_key(key, windowed and kind != "plan")[0], (kind, record)


def write_array(features, index: dict, path: str, fmt: str) -> None:
    """Write one row's array at ``path`` (local or a URI), whole or not at all."""
    import numpy as np

    extra = {"window_start_sec": np.asarray(index["window_start_sec"], np.float64),
             "window_end_sec": np.asarray(index["window_end_sec"], np.float64)}
    if fmt == "hdf5":
        # h5py writes to a file, not a stream: a local temporary file, then copied.
        import h5py

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "f.h5")
            with h5py.File(local, "w") as h5:
                h5.create_dataset("features", data=features)
                for name, values in extra.items():
                    h5.create_dataset(name, data=values)
                h5.attrs["clip_id"] = index["clip_id"] or ""
            with open(local, "rb") as f:
                data = f.read()
    else:
        buffer = io.BytesIO()
        if fmt == "npy":
            np.save(buffer, features)
        else:
            np.savez(buffer, features=features, **extra)
        data = buffer.getvalue()
    fileio.write_bytes(path, data)


class WriteRowFeatures(beam.DoFn):
    """(row_key, entries) -> the row's array file, and its index row."""

    def __init__(self, options: FeaturesOptions):
        self._options = options
        self._written = Metrics.counter(NAMESPACE, "feature_files_written")
        self._not_written = Metrics.counter(NAMESPACE, "feature_rows_not_written")

    def process(self, element):
        row_key, entries = element
        o = self._options
        parts = collect(row_key, entries, o.windowed)
        done = assemble(parts, o.streams, o.windowed, o.allow_gaps,
                        crops=int(o.shared.get("crops", 1)))
        index = {**o.shared, **done.index, "run_id": o.run_id,
                 "feature_dim": 1024 * len(o.streams)}
        if done.features is not None:
            name = file_stem(parts.clip_id or row_key) + FORMATS[o.format]
            write_array(done.features, index, fileio.join(o.out, name), o.format)
            index["file"] = name
            self._written.inc()
        else:
            self._not_written.inc()
        yield index


def shard_sources(run: str, windowed: bool) -> list[tuple[str, str]]:
    """``(kind, path)`` of every shard the export reads."""
    from beam_i3d.job.results import list_shards

    scores = "windows" if windowed else "scores"
    sources = [("score", p) for p in list_shards(fileio.join(run, scores))]
    sources += [("error", p) for p in list_shards(fileio.join(run, "errors"))]
    if windowed:
        sources += [("plan", p) for p in list_shards(fileio.join(run, "plans"))]
    return sources


def build_pipeline(pipeline, options: FeaturesOptions, metadata: dict[str, Any]) -> None:
    from beam_i3d.job.records import complete_record
    from beam_i3d.job.shards import WriteShards
    from schemas import FEATURES_INDEX_SCHEMA, with_run_metadata

    _ = (pipeline
         | "Shards" >> beam.Create(shard_sources(options.run, options.windowed))
         | "Spread" >> beam.Reshuffle()
         | "Rows" >> beam.FlatMap(read_shard, options.windowed)
         | "ByManifestRow" >> beam.GroupByKey()
         | "Write" >> beam.ParDo(WriteRowFeatures(options))
         | "Complete" >> beam.Map(complete_record, FEATURES_INDEX_SCHEMA)
         | "WriteIndex" >> WriteShards(fileio.join(options.out, INDEX_PARTS),
                                       with_run_metadata(FEATURES_INDEX_SCHEMA, metadata),
                                       options.run_id))
