"""Output shards: rows become durable Parquet files while the job runs.

Beam's ``WriteToParquet`` publishes its files only when the whole job succeeds, so a
job killed at 95% keeps nothing. :class:`WriteShards` instead writes each worker's rows
as it goes: a shard is written when it holds ``max_rows`` rows, when ``max_seconds``
have passed since its first row, and at the end of every bundle. Each shard is written
atomically (locally a temporary ``.parquet.tmp`` file renamed into place; on object
stores such as GCS an object only appears once its upload completes), so readers see
whole files only. Names: ``<run_id>-<writer>-<seq>.parquet``, sortable by run.

A bundle that a runner retries writes its rows again, in new shards: the same
``row_key`` may then appear twice. Readers keep one row per key
(:mod:`beam_i3d.job.results`); ``verify`` reports the repeats.
"""

from __future__ import annotations

import os
import time
import uuid

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_i3d import fileio
from beam_i3d.job.output_record import COMMAND_FILES
from beam_i3d.job.progress import NAMESPACE

TMP_SUFFIX = ".parquet.tmp"


def shard_name(run_id: str, writer: str, seq: int) -> str:
    """``<run_id>-<writer>-<seq:06d>.parquet``."""
    return f"{run_id}-{writer}-{seq:06d}.parquet"


def write_table_atomically(table: pa.Table, path: str) -> None:
    """Write ``table`` as Parquet at ``path`` (local or a Beam FileSystems URI) so that
    no reader ever sees a partial file."""
    import pyarrow.parquet as pq

    if fileio.is_local(path):
        local = fileio.local_path(path)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = local[: -len(".parquet")] + f".{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(sink.getvalue().to_pybytes())


class _ShardWriter(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema, run_id: str, max_rows: int,
                 max_seconds: float):
        self._directory = directory
        self._schema = schema
        self._run_id = run_id
        self._max_rows = max_rows
        self._max_seconds = max_seconds
        self._shards = Metrics.counter(NAMESPACE, "shards_written")

    def setup(self):
        self._writer = uuid.uuid4().hex[:12]
        self._seq = 0
        self._rows: list[dict] = []
        self._first_row_at = 0.0

    def start_bundle(self):
        self._rows = []

    def process(self, record):
        if not self._rows:
            self._first_row_at = time.monotonic()
        self._rows.append(record)
        if (len(self._rows) >= self._max_rows
                or time.monotonic() - self._first_row_at >= self._max_seconds):
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        path = fileio.join(self._directory, shard_name(self._run_id, self._writer, self._seq))
        write_table_atomically(table, path)
        self._seq += 1
        self._rows = []
        self._shards.inc()


class WriteShards(beam.PTransform):
    """Records (dicts complete to ``schema``) -> Parquet shards in ``directory``,
    written as the job runs (see module doc)."""

    def __init__(self, directory: str, schema: pa.Schema, run_id: str,
                 max_rows: int = 500, max_seconds: float = 120.0):
        super().__init__()
        if max_rows < 1 or max_seconds <= 0:
            raise ValueError("a shard needs max_rows >= 1 and max_seconds > 0")
        self._writer = _ShardWriter(directory, schema, run_id, max_rows, max_seconds)

    def expand(self, records):
        return records | "Shards" >> beam.ParDo(self._writer)


# --- The output directory as a whole ---------------------------------------------------

# What a run writes under its output directory (windowed runs: windows, timelines, plans).
OUTPUT_DIRS = COMMAND_FILES["score"]


def existing_results(output: str) -> list[str]:
    """The shards (``*.parquet``) already under ``output``'s result directories."""
    from beam_i3d.job.results import list_shards

    return [p for d in OUTPUT_DIRS for p in list_shards(fileio.join(output, d))]


def prepare_output(output: str, *, skip_existing: bool, overwrite: bool,
                   dry_run: bool = False) -> int:
    """Decide what a new run does with what ``output`` already holds; returns the number
    of shards found.

    Empty: nothing to decide. Holding results: refused (OutputError) unless the run
    resumes (``skip_existing``: new shards beside the old) or replaces them
    (``overwrite``: every file under the result directories is removed now, before
    anything runs, so nothing of the old run survives mixed with the new). A dry run
    checks but removes nothing.
    """
    from beam_i3d.errors import OutputError

    found = existing_results(output)
    if not found or skip_existing:
        return len(found)
    if not overwrite:
        raise OutputError(
            f"{output} already holds results ({len(found)} file(s) under "
            f"{'/'.join(OUTPUT_DIRS)}/): pass --skip-existing to resume (score only the "
            "rows not settled yet) or --overwrite to replace them")
    if not dry_run:
        remove_results(output)
    return len(found)


def remove_results(output: str) -> None:
    """Delete every file under ``output``'s result directories (shards and leftovers)."""
    if fileio.is_local(output):
        import shutil

        for d in OUTPUT_DIRS:
            shutil.rmtree(os.path.join(fileio.local_path(output), d), ignore_errors=True)
        return
    from apache_beam.io.filesystems import FileSystems

    for d in OUTPUT_DIRS:
        base = FileSystems.join(output, d)
        found = FileSystems.match([base + "/**"])[0].metadata_list
        if found:
            FileSystems.delete([m.path for m in found])
