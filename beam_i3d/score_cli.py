"""``beam-i3d score``: run the scoring job (see :mod:`beam_i3d.pipeline`).

Beam style: our options are parsed first; every other argument goes to Beam's
PipelineOptions (``--runner``, ``--project``, ``--region``, ``--temp_location``,
``--direct_num_workers``, ``--direct_running_mode``, ...). The runner defaults to the
DirectRunner.
"""

from __future__ import annotations

import argparse
import sys

from beam_i3d.cli import UsageExit
from beam_i3d.cli_options import add_clip_options, decode_limits_from_args, positive

FLOW_CHECKPOINT_HELP = (
    "the flow stream has no bundled weights: pass --flow-checkpoint with one of the "
    "release's flow checkpoints, e.g. flow_imagenet or flow_scratch from "
    "https://github.com/deepmind/kinetics-i3d/tree/master/data/checkpoints (download "
    "model.ckpt.index and model.ckpt.data-00000-of-00001 and give their directory or "
    "the prefix .../model.ckpt, local or gs://)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("beam-i3d score --manifest GLOB --output DIR [options] "
                    "[Beam pipeline options]")
    parser.epilog = ("Arguments not listed here are Beam pipeline options, e.g. --runner "
                     "DataflowRunner --project P --region R --temp_location gs://..., or "
                     "--direct_num_workers 2 --direct_running_mode multi_processing.")
    add = parser.add_argument
    add("--manifest", required=True, metavar="GLOB",
        help="manifest file(s): CSV, JSON Lines or Parquet; local or gs://; globs allowed")
    add("--output", required=True, metavar="DIR",
        help="output directory: DIR/scores/*.parquet and DIR/errors/*.parquet; local, "
             "file:// or gs://bucket/path (not a bucket's or file system's root)")
    add_clip_options(parser)
    add("--rgb-checkpoint", default="default", metavar="SPEC",
        help="RGB weights: 'default' (bundled Kinetics-400), or a checkpoint prefix or "
             "directory, local or gs:// (default: default)")
    add("--flow-checkpoint", metavar="SPEC",
        help="flow weights (required for the flow stream): a checkpoint prefix or "
             "directory, local or gs://")
    add("--top-k", type=positive(int), default=5, help="labels kept per clip (default: 5)")
    add("--batch-size", type=positive(int), default=8, help="most clips a batch (default: 8)")
    add("--max-batch-frames", type=positive(int), default=2000,
        help="most frames in one forward, both streams counted (default: 2000); caps "
             "GPU memory for batches of long clips")
    add("--model-copies", type=positive(int), default=None,
        help="load this many models per machine, shared across worker processes (use 1 "
             "per GPU on GPU workers); default: one model per worker process")
    add("--allow-tf32", action="store_true",
        help="let Ampere-or-newer GPUs compute in TensorFloat-32 (10-bit mantissas): "
             "faster, but less close to the published model (default: float32)")
    add("--no-embeddings", action="store_true",
        help="do not write the 1024-d embeddings (their columns are null)")
    add("--video-template", metavar="TEMPLATE",
        help="build each video URI from the row's columns, e.g. 'gs://b/k400/{split}/"
             "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4'")
    add("--ignore-times", action="store_true",
        help="score whole files, ignoring the manifest's times (files already trimmed)")
    add("--skip-existing", action="store_true",
        help="resume: skip clips that already have a row in DIR/scores or DIR/errors, "
             "and write new part files beside the old ones")
    add("--decode-processes", type=positive(int), metavar="N",
        help="child processes decoding clips on each worker (default: the worker's CPU "
             "count)")
    add("--quiet", action="store_true", help="no progress line on stderr")
    add("--dry-run", action="store_true",
        help="validate without running: our options, Beam's pipeline options for the "
             "runner, local checkpoints and manifests, and the pipeline graph; remote "
             "(gs://) inputs are not read")


def options_from_args(args: argparse.Namespace):
    from beam_i3d.outputs import check_output_location
    from beam_i3d.pipeline import ScoreOptions, new_run_id

    if "flow" in args.streams and not args.flow_checkpoint:
        raise UsageExit(f"beam-i3d score: error: {FLOW_CHECKPOINT_HELP}")
    return ScoreOptions(
        manifest=args.manifest,
        output=check_output_location(args.output),
        streams=args.streams,
        rgb_checkpoint=args.rgb_checkpoint if "rgb" in args.streams else None,
        flow_checkpoint=args.flow_checkpoint if "flow" in args.streams else None,
        top_k=args.top_k,
        max_seconds=args.max_seconds,
        batch_size=args.batch_size,
        max_batch_frames=args.max_batch_frames,
        model_copies=args.model_copies,
        allow_tf32=args.allow_tf32,
        embeddings=not args.no_embeddings,
        video_template=args.video_template,
        ignore_times=args.ignore_times,
        skip_existing=args.skip_existing,
        quantize_flow=args.quantize_flow,
        flow_backend=args.flow_backend,
        flow_batch_pairs=args.flow_batch_pairs,
        limits=decode_limits_from_args(args),
        decode_processes=args.decode_processes,
        run_id=new_run_id(),
    )


def check_before_launch(options, local_only: bool = False) -> int:
    """Fail fast, on the launching machine, on what would fail every clip or fail late:
    an unusable output location (before the model loads), unreadable or mismatched
    checkpoints, streams of different class counts, a manifest glob that matches
    nothing, manifests of an unknown format or not UTF-8 text, and storage (the
    videos' buckets, a remote output) that cannot be reached with the credentials at
    hand (see :mod:`beam_i3d.launch_checks`). With ``local_only``, remote inputs and
    outputs are not read (a dry run). Returns the class count (400 where no checkpoint
    could be read)."""
    from beam_i3d import fileio, launch_checks
    from beam_i3d.errors import ConfigurationError, ModelError
    from beam_i3d.outputs import check_output_location

    check_output_location(options.output)
    try:
        classes = _checkpoint_classes(options, local_only)
    except ModelError as e:
        # Weights that cannot be read or do not fit: the run cannot start (exit 3).
        raise ConfigurationError(str(e)) from e
    if len(set(classes.values())) > 1:
        raise ConfigurationError("the streams' class counts differ: " + ", ".join(
            f"{s} {n}" for s, n in classes.items()))
    if local_only and not fileio.is_local(options.manifest):
        print(f"dry run: not reading remote manifest {options.manifest}", file=sys.stderr)
    else:
        paths = launch_checks.match_manifests(options.manifest)
        heads = launch_checks.check_manifest_files(paths)
        samples = launch_checks.sample_rows(heads, options.manifest_options)
        if local_only:
            remote = sorted({b for u, _ in samples if (b := launch_checks.bucket_of(u))})
            if remote:
                print(f"dry run: not probing the videos' storage {', '.join(remote)}",
                      file=sys.stderr)
        else:
            launch_checks.check_storage(samples, options.output)
    return next(iter(classes.values()), 400)


def _checkpoint_classes(options, local_only: bool) -> dict[str, int]:
    """Class count by stream of the checkpoints that can be checked here; raises
    ModelError (unreadable, mismatched, default weights not fetched)."""
    from beam_i3d import fileio
    from model import default_weights

    classes = {}
    for stream in options.streams:
        spec = getattr(options, f"{stream}_checkpoint")
        if spec == "default" and stream == "rgb":
            # Fetched and converted if need be; checked strictly when it was converted.
            # Skipping the read here spares the launcher TensorFlow's import (~4 s).
            default_weights.default_checkpoint()
            classes[stream] = default_weights.NUM_CLASSES
            continue
        if local_only and not (spec == "default" or fileio.is_local(spec)):
            print(f"dry run: not reading remote {stream} checkpoint {spec}", file=sys.stderr)
            continue
        from model.weights import check_stream_checkpoint

        classes[stream] = check_stream_checkpoint(spec, stream).num_classes
    return classes


def validate_pipeline_options(pipeline_options) -> None:
    """Beam's own checks of the options for the chosen runner (needs no cloud access)."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    runner = create_runner(pipeline_options.view_as(StandardOptions).runner or "DirectRunner")
    problems = PipelineOptionsValidator(pipeline_options, runner).validate()
    if problems:
        raise UsageExit("beam-i3d score: error: invalid pipeline options: "
                        + "; ".join(" ".join(p.split()) for p in problems))


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_i3d.pipeline import build_pipeline
    from beam_i3d.progress import run_with_progress

    options = options_from_args(args)
    num_classes = check_before_launch(options, local_only=args.dry_run)
    if not any(a.startswith("--direct_running_mode") for a in extra_args):
        # Beam's default local mode (in_memory) runs the workers in the launching
        # thread, which then cannot answer progress requests: no progress line.
        extra_args = [*extra_args, "--direct_running_mode", "multi_threading"]
    pipeline_options = PipelineOptions(extra_args)
    if args.dry_run:
        from apache_beam.options.pipeline_options import TestOptions

        # Beam's own dry-run flag: its option checks then skip their GCS look-ups.
        pipeline_options.view_as(TestOptions).dry_run = True
    validate_pipeline_options(pipeline_options)
    if args.dry_run:
        # Build the graph on a runner that is never started, and serialise it as a
        # runner would: catches unpicklable DoFns and bad transform wiring.
        pipeline = beam.Pipeline(runner="DirectRunner", options=pipeline_options)
        build_pipeline(pipeline, options, num_classes)
        transforms = len(pipeline.to_runner_api().components.transforms)
        print(f"dry run: options valid, pipeline of {transforms} transforms built; "
              "nothing was run", file=sys.stderr)
        return 0
    # Local worker processes forward their start-up warnings (unparsed options, no
    # semi-persistent directory) through this logger; errors still come through.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        logging.ERROR)
    pipeline = beam.Pipeline(options=pipeline_options)
    build_pipeline(pipeline, options, num_classes)
    counts = run_with_progress(pipeline, quiet=args.quiet)
    print(f"scored {counts.get('clips_scored', 0)} clips, "
          f"{counts.get('clips_failed', 0)} errors "
          f"(run {options.run_id}): {options.output}/scores, {options.output}/errors",
          file=sys.stderr)
    return 0
