"""Reading a run's outputs back: one row per manifest row, whatever the shards hold.

``DIR/scores`` and ``DIR/errors`` hold the shards of every run into ``DIR`` (resumed
runs add theirs). A ``row_key`` can appear more than once: a runner that retried a
bundle wrote its rows twice, or ``--retry-errors`` scored a row that had failed before.
The rule, here and in the manual's read recipe (docs/outputs.md), is:

* a row with a score is settled by its score (of the latest run, if several);
* a row without a score is settled by its error of the latest run.

Runs are ordered by ``run_id``, which starts with the run's UTC start time. Files of
schema version 1 (no ``row_key``/``run_id``) are read with ``clip_id`` as the key.

Only the key columns are read to decide; :func:`keep_masks` says which rows of which file
to keep, so a reader of wide columns (the report) reads each file once.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from beam_i3d import fileio
from beam_i3d.errors import OutputError
from schemas import read_run_metadata

KINDS = ("scores", "errors")


def list_shards(directory: str) -> list[str]:
    """The ``*.parquet`` files directly in ``directory`` (local or a URI), sorted;
    ``[]`` if there are none or the directory does not exist."""
    if fileio.is_local(directory):
        path = fileio.local_path(directory)
        if not os.path.isdir(path):
            return []
        return sorted(os.path.join(path, name) for name in os.listdir(path)
                      if name.endswith(".parquet") and not name.startswith("."))
    from apache_beam.io.filesystems import FileSystems

    base = directory.rstrip("/")
    found = FileSystems.match([base + "/*.parquet"])[0].metadata_list
    return sorted(m.path for m in found if "/" not in m.path[len(base) + 1:])


def open_shard(path: str):
    if fileio.is_local(path):
        return open(fileio.local_path(path), "rb")
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_columns(path: str, wanted: Sequence[str], opener: Callable | None = None
                 ) -> pa.Table:
    """The ``wanted`` columns of one shard that it has (others are left out).

    A file that is not Parquet (empty, truncated, something else) is an OutputError
    naming it: shards are written atomically, so such a file did not come from a run.
    """
    import pyarrow.parquet as pq

    try:
        with (opener or (lambda: open_shard(path)))() as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            return parquet.read(columns=[c for c in wanted if c in names])
    except (pa.ArrowInvalid, OSError) as e:
        size = ""
        if fileio.is_local(path) and os.path.exists(fileio.local_path(path)):
            size = f" ({os.path.getsize(fileio.local_path(path))} bytes)"
        raise OutputError(f"{path}{size} is not a Parquet file beam-i3d wrote ({e}); "
                          "move it out of the output directory") from e


def _keys(table: pa.Table) -> list:
    if "row_key" in table.column_names:
        return table.column("row_key").to_pylist()
    return table.column("clip_id").to_pylist() if "clip_id" in table.column_names else []


def _runs(table: pa.Table, n: int) -> list:
    if "run_id" in table.column_names:
        return table.column("run_id").to_pylist()
    return [""] * n


def read_key_columns(path: str, opener: Callable | None = None
                     ) -> Iterator[tuple[str, str | None, str | None]]:
    """``(row_key, error_type, stage)`` of each row of one shard (None, None for
    scores); rows without a key (version-1 errors without a clip_id) are left out."""
    table = read_columns(path, ("row_key", "clip_id", "error_type", "stage"), opener)
    keys = _keys(table)
    types = (table.column("error_type").to_pylist() if "error_type" in table.column_names
             else [None] * len(keys))
    stages = (table.column("stage").to_pylist() if "stage" in table.column_names
              else [None] * len(keys))
    for key, error_type, stage in zip(keys, types, stages):
        if key is not None:
            yield key, error_type, stage


@dataclasses.dataclass
class Settled:
    """What an output directory settles, one entry per ``row_key``.

    ``scores``: key -> run_id of the score kept; ``errors``: key -> (run_id,
    error_type, stage) for keys without a score; ``rows``: rows read per kind;
    ``repeated``: rows beyond the one kept per key; of them ``superseded``: errors of
    keys that have a score (an error retried with success); the rest are copies
    (a runner's retried bundles); ``doubled``: keys with more than one row of one kind;
    ``files``: the shards read, per kind; ``keep``: per file, which rows are kept.
    """

    scores: dict[str, str]
    errors: dict[str, tuple[str, str, str]]
    rows: dict[str, int]
    repeated: int
    superseded: int
    doubled: list[str]
    files: dict[str, list[str]]
    keep: dict[str, np.ndarray]
    # per shard read, its ``beam_i3d.*`` metadata (schemas.read_run_metadata), read with
    # its keys: the recipe check (beam_i3d.job.output_record) needs no second read
    metadata: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def run_counts(self, run_id: str) -> tuple[int, int]:
        """(scored, failed) rows kept that ``run_id`` wrote."""
        return (sum(1 for r in self.scores.values() if r == run_id),
                sum(1 for r, _, _ in self.errors.values() if r == run_id))


def settle(output: str, scores_dir: str = "scores") -> Settled:
    """Read the key columns of every shard under ``output`` and apply the rule above.
    ``scores_dir``: where the scored rows are (``windows`` for a windowed run, whose
    rows are windows); ``Settled.scores`` holds them."""
    files = {"scores": list_shards(fileio.join(output, scores_dir)),
             "errors": list_shards(fileio.join(output, "errors"))}
    best: dict[str, dict[str, tuple]] = {kind: {} for kind in KINDS}
    rows = {kind: 0 for kind in KINDS}
    sizes: dict[str, int] = {}
    doubled: set[str] = set()
    metadata: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        chosen = best[kind]
        for f, path in enumerate(files[kind]):
            table = read_columns(path, ("row_key", "clip_id", "run_id", "error_type", "stage"))
            sizes[path] = table.num_rows
            metadata[path] = read_run_metadata(table.schema)
            keys = _keys(table)
            runs = _runs(table, len(keys))
            rows[kind] += len(keys)
            extra = ([table.column(c).to_pylist() for c in ("error_type", "stage")]
                     if kind == "errors" else None)
            for i, (key, run) in enumerate(zip(keys, runs)):
                if key is None:
                    continue
                run = run or ""
                held = chosen.get(key)
                if held is not None:
                    doubled.add(key)
                if held is None or run > held[0]:
                    chosen[key] = (run, f, i, *((extra[0][i], extra[1][i]) if extra else ()))
    superseded = 0
    for key in best["scores"]:
        superseded += best["errors"].pop(key, None) is not None
    keep = {}
    for kind in KINDS:
        kept_rows: list[list[int]] = [[] for _ in files[kind]]
        for entry in best[kind].values():
            kept_rows[entry[1]].append(entry[2])
        for f, path in enumerate(files[kind]):
            mask = np.zeros(sizes[path], bool)
            mask[np.asarray(kept_rows[f], int)] = True
            keep[path] = mask
    kept = len(best["scores"]) + len(best["errors"])
    return Settled(
        scores={k: v[0] for k, v in best["scores"].items()},
        errors={k: (v[0], v[3], v[4]) for k, v in best["errors"].items()},
        rows=rows, repeated=rows["scores"] + rows["errors"] - kept, superseded=superseded,
        doubled=sorted(doubled), files=files, keep=keep, metadata=metadata)


def read_plans(output: str) -> dict[str, int]:
    """A windowed run's plans (``DIR/plans``): row_key -> number of windows, the latest
    run's where a row was planned more than once (a resumed run plans again); ``{}``
    for an output without plans."""
    chosen: dict[str, tuple[str, int]] = {}
    for path in list_shards(fileio.join(output, "plans")):
        table = read_columns(path, ("row_key", "run_id", "num_windows"))
        for key, run, count in zip(*(table.column(c).to_pylist()
                                     for c in ("row_key", "run_id", "num_windows"))):
            if key not in chosen or run > chosen[key][0]:
                chosen[key] = (run, count)
    return {key: count for key, (_, count) in chosen.items()}


def read_table(output: str, kind: str, columns: Sequence[str] | None = None,
               settled: Settled | None = None) -> pa.Table:
    """``kind`` ("scores" or "errors") of ``output`` as one table, one row per
    ``row_key`` by the rule above (the Python read recipe)."""
    import pyarrow.parquet as pq

    settled = settled or settle(output)
    parts = []
    for path in settled.files[kind]:
        with open_shard(path) as f:
            table = pq.ParquetFile(f).read(columns=list(columns) if columns else None)
        parts.append(table.filter(pa.array(settled.keep[path])))
    if not parts:
        from schemas import SCHEMAS

        schema = SCHEMAS[kind]
        return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
    return pa.concat_tables(parts, promote_options="default")
