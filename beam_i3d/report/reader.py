"""Reading a run's outputs for the report: part files, their metadata, column batches.

Local directories are read with pyarrow directly (memory-mapped); anything else
(``gs://`` ...) through Beam's FileSystems, whose file objects pyarrow reads with
seeks, so only the footers and the requested column chunks travel.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_i3d import fileio
from beam_i3d.errors import ReportError
from schemas import read_run_metadata

BATCH_ROWS = 128 * 1024

# The columns the report reads; never logits or embeddings.
SCORES_COLUMNS = ("label", "predicted_label", "predicted_probability", "num_frames", "top_k")
TOP_K_FIELD = "label"             # the only field of top_k's structs that is read
ERRORS_COLUMNS = ("stage", "error_type", "message", "clip_id")


def part_files(directory: str) -> list[str] | None:
    """The ``*.parquet`` files directly in ``directory``, sorted; None if it does not exist.

    On object stores a directory exists when some object lies under it.
    """
    from beam_i3d.job.results import list_shards

    if fileio.is_local(directory):
        if not os.path.isdir(fileio.local_path(directory)):
            return None
        return list_shards(directory)
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.match([directory.rstrip("/") + "/*"])[0].metadata_list:
        return None
    return list_shards(directory)


def directory_exists(directory: str) -> bool:
    """Whether ``directory`` exists: locally, as a directory; on object stores, when some
    object lies under it."""
    if fileio.is_local(directory):
        return os.path.isdir(fileio.local_path(directory))
    from apache_beam.io.filesystems import FileSystems

    return bool(FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list)


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile over a local path or a Beam FileSystems URI; a file that is not
    Parquet (or is truncated) is a :class:`ReportError` naming it."""
    try:
        if fileio.is_local(path):
            with pq.ParquetFile(fileio.local_path(path), memory_map=True) as f:
                yield f
            return
        from apache_beam.io.filesystems import CompressionTypes, FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            with pq.ParquetFile(raw) as f:
                yield f
    except (pa.ArrowInvalid, OSError) as e:
        raise ReportError(f"{path}: cannot read it as Parquet: {e}") from e


def file_metadata(path: str) -> dict[str, str]:
    """The ``beam_i3d.*`` metadata of one Parquet file (reads only its footer)."""
    with open_parquet(path) as f:
        return read_run_metadata(f.schema_arrow)


def leaf_columns(parquet: pq.ParquetFile, columns: Sequence[str]) -> list[str]:
    """Parquet column paths to read for ``columns``: top-level ones whole, and of
    ``top_k`` only its structs' ``label`` leaf (whatever the list's inner names)."""
    paths = [parquet.schema.column(i).path for i in range(len(parquet.schema))]
    selected = []
    for name in columns:
        if name == "top_k":
            leaves = [p for p in paths if p.startswith("top_k.") and p.endswith("." + TOP_K_FIELD)]
            if len(leaves) != 1:
                raise ReportError(f"{name}: cannot find the label field of top_k in {paths}")
            selected.append(leaves[0])
        elif name in parquet.schema_arrow.names:
            selected.append(name)
    return selected


def iter_batches(paths: Sequence[str], columns: Sequence[str],
                 keep: Mapping[str, np.ndarray] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` over all ``paths`` in order, ``BATCH_ROWS`` at a time;
    with ``keep`` (per path, a boolean mask of its rows: :func:`beam_i3d.job.results.settle`),
    only the rows kept, so a row written twice by retried work counts once.

    A file lacking a column is an error that names the file and the column.
    """
    for path in paths:
        with open_parquet(path) as f:
            missing = [c for c in columns if c not in f.schema_arrow.names]
            if missing:
                raise ReportError(f"{path}: no column(s) {', '.join(missing)}; "
                                  "is it a beam-i3d output?")
            if not f.metadata.num_rows:
                continue
            batches = f.iter_batches(batch_size=BATCH_ROWS, columns=leaf_columns(f, columns),
                                     use_threads=True)
            if keep is None:
                yield from batches
                continue
            mask, offset = keep[path], 0
            for batch in batches:
                part = mask[offset:offset + batch.num_rows]
                offset += batch.num_rows
                yield batch if part.all() else batch.filter(pa.array(part))
