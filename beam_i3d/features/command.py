"""``beam-i3d features RUN --out DIR``: a score run's embeddings as one array file per
manifest row, the layout research code reads (a Beam job; see
:mod:`beam_i3d.features.pipeline` and :mod:`beam_i3d.features.arrays`).

Writes ``DIR/<clip_id>.npy`` (or ``.npz``, ``.h5``): float32 ``[T, D]``, windows in
order, D = 1,024 per stream with RGB first; ``DIR/index.parquet`` (one row per manifest
row: file, status, shape, windows, fps, streams, weights; schema
``schemas.FEATURES_INDEX_SCHEMA``); ``DIR/recipe.json`` (the run's recipe, and the
export's format). Every other argument is a Beam pipeline option, as for ``score``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

FORMAT_HELP = ("npy (default: one float32 [T, D] array per file), npz (features, "
               "window_start_sec, window_end_sec) or hdf5 (the same as datasets)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from beam_i3d.features.pipeline import FORMATS

    parser.usage = ("beam-i3d features RUN --out DIR [--format npy|npz|hdf5] "
                    "[--allow-gaps] [Beam pipeline options]")
    parser.epilog = ("RUN: the output directory of a `beam-i3d score` run (with or without "
                     "--window), local or gs://. Arguments not listed here are Beam "
                     "pipeline options.")
    add = parser.add_argument
    add("run", metavar="RUN", help="a score run's output directory")
    add("--out", required=True, metavar="DIR",
        help="where to write DIR/<clip_id>.npy (one per manifest row) and DIR/index.parquet "
             "(a new or empty directory; local or gs://)")
    add("--format", choices=sorted(FORMATS), default="npy", help=FORMAT_HELP)
    add("--allow-gaps", action="store_true",
        help="write a row whose windows did not all score, with NaN lines for the missing "
             "ones (default: such a row is named in the index, not written)")


def source_recipe(run: str) -> dict:
    """The recipe of the score run at ``run`` (its record, or what an older output's
    shards recorded); ConfigurationError where it is not a score output with features."""
    from beam_i3d.errors import ConfigurationError
    from beam_i3d.job import output_record

    record = output_record.read_record(run)
    if record is None:
        command = output_record.command_of_files(run)
        if command is None:
            raise ConfigurationError(f"{run} holds no score run (no recipe.json, scores/, "
                                     "windows/ or errors/)")
        recipe = (output_record.legacy_recipe(run, command,
                                              output_record.score_recipe_from_metadata)
                  if command == "score" else None) or {}
    else:
        command, recipe = record.command, record.recipe
    if command != "score":
        raise ConfigurationError(f"{run} is a `beam-i3d {command}` output; features reads "
                                 "the output of `beam-i3d score`")
    if recipe.get("embeddings") is False:
        raise ConfigurationError(f"{run} was scored with --no-embeddings: it holds no "
                                 "features to export; score it again without that option")
    return recipe


def check_out(out: str) -> str:
    """A new or empty ``--out`` (the export never overwrites); OutputError otherwise."""
    from beam_i3d import fileio
    from beam_i3d.errors import OutputError
    from beam_i3d.job.outputs import check_output_location

    out = check_output_location(out, "--out")
    if fileio.is_local(out):
        path = fileio.local_path(out)
        if os.path.isdir(path) and os.listdir(path):
            raise OutputError(f"--out {out} is not empty: features never overwrite; "
                              "choose a new directory")
        return out
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.match([out + "/**"])[0].metadata_list:
        raise OutputError(f"--out {out} is not empty: features never overwrite; choose a "
                          "new directory")
    return out


def join_index(out: str) -> list[dict]:
    """Join the index parts the job wrote into ``DIR/index.parquet`` (one row group per
    part: memory bounded by a part), remove the parts; returns each row's
    (row_key, status) as dicts."""
    import pyarrow.parquet as pq

    from beam_i3d import fileio
    from beam_i3d.features.pipeline import INDEX_PARTS
    from beam_i3d.job.results import list_shards, open_shard
    from schemas import FEATURES_INDEX_SCHEMA

    parts = list_shards(fileio.join(out, INDEX_PARTS))
    seen = []
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "index.parquet")
        schema = FEATURES_INDEX_SCHEMA
        if parts:
            with open_shard(parts[0]) as f:
                schema = pq.ParquetFile(f).schema_arrow
        with pq.ParquetWriter(local, schema) as writer:
            for path in parts:
                with open_shard(path) as f:
                    table = pq.ParquetFile(f).read()
                writer.write_table(table)
                seen += table.select(["row_key", "status"]).to_pylist()
        target = fileio.join(out, "index.parquet")
        if fileio.is_local(target):
            shutil.move(local, fileio.local_path(target))
        else:
            from apache_beam.io.filesystems import CompressionTypes, FileSystems

            with open(local, "rb") as src, FileSystems.create(
                    target, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
    _remove_tree(fileio.join(out, INDEX_PARTS))
    return seen


def _remove_tree(path: str) -> None:
    from beam_i3d import fileio

    if fileio.is_local(path):
        shutil.rmtree(fileio.local_path(path), ignore_errors=True)
        return
    from apache_beam.io.filesystems import FileSystems

    found = FileSystems.match([path + "/**"])[0].metadata_list
    if found:
        FileSystems.delete([m.path for m in found])


def settled_rows(run: str, windowed: bool) -> set[str]:
    """The manifest rows ``run`` settles (by score, error or plan): what the index must
    hold, one row each."""
    from beam_i3d.features.arrays import base_key
    from beam_i3d.job.results import read_plans, settle

    settled = settle(run, "windows" if windowed else "scores")
    keys = {base_key(k, windowed)[0] for k in (*settled.scores, *settled.errors)}
    return keys | set(read_plans(run) if windowed else ())


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_i3d import __version__
    from beam_i3d.cli import EXIT_ERROR_RATE, EXIT_OK, EXIT_RECONCILIATION
    from beam_i3d.cli.score import validate_pipeline_options
    from beam_i3d.features.arrays import index_entry_fields
    from beam_i3d.features.pipeline import FeaturesOptions, build_pipeline
    from beam_i3d.job import output_record
    from beam_i3d.job.pipeline import new_run_id

    prog = "beam-i3d features"
    source = args.run.rstrip("/") or args.run
    recipe = source_recipe(source)
    out = check_out(args.out)
    windowed = recipe.get("layout") == "windows"
    streams = tuple(recipe.get("streams", "rgb").split(","))
    options = FeaturesOptions(run=source, out=out, windowed=windowed, streams=streams,
                              shared=index_entry_fields(recipe), format=args.format,
                              allow_gaps=args.allow_gaps, run_id=new_run_id())
    pipeline_options = PipelineOptions(extra_args)
    validate_pipeline_options(pipeline_options)
    export_recipe = {**recipe, "source": source, "format": args.format,
                     "allow_gaps": bool(args.allow_gaps)}
    output_record.write_record(out, output_record.OutputRecord(
        "features", export_recipe, options.run_id, __version__))
    metadata = {"run_id": options.run_id, output_record.METADATA_KEY: export_recipe}
    pipeline = beam.Pipeline(options=pipeline_options)
    build_pipeline(pipeline, options, metadata)
    result = pipeline.run()
    result.wait_until_finish()

    index = join_index(out)
    expected = settled_rows(source, windowed)
    indexed = [r["row_key"] for r in index]
    missing = sorted(expected - set(indexed))
    doubled = len(indexed) - len(set(indexed))
    counts: dict[str, int] = {}
    for r in index:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"{prog}: {len(set(indexed)):,} manifest rows: "
          + ", ".join(f"{n:,} {status.replace('_', ' ')}" for status, n in sorted(counts.items()))
          + f"; index: {out}/index.parquet", file=sys.stderr)
    if missing or doubled:
        print(f"{prog}: error: the index does not hold every row of {source} once: "
              f"{len(missing):,} missing ({', '.join(missing[:10])}), {doubled:,} doubled",
              file=sys.stderr)
        return EXIT_RECONCILIATION
    written = counts.get("written", 0) + counts.get("written_with_gaps", 0)
    if index and not written:
        print(f"{prog}: error: no row could be written (see the index's status and error "
              "columns)", file=sys.stderr)
        return EXIT_ERROR_RATE
    return EXIT_OK
