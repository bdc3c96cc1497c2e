"""``beam-i3d score``: run the scoring job (see :mod:`beam_i3d.job.pipeline`).

Beam style: our options are parsed first; every other argument goes to Beam's
PipelineOptions (``--runner``, ``--project``, ``--region``, ``--temp_location``,
``--direct_num_workers``, ``--direct_running_mode``, ...). The runner defaults to the
DirectRunner.
"""

from __future__ import annotations

import argparse
import sys

from beam_i3d.cli import UsageExit
from beam_i3d.cli.options import (add_clip_options, add_crops_option,
                                  add_model_backend_options, decode_limits_from_args,
                                  fraction, positive)

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
    parser.set_defaults(streams=None)  # ("rgb",), or --preset's (see _apply_preset)
    add("--rgb-checkpoint", default="default", metavar="SPEC",
        help="RGB weights: 'default' (bundled Kinetics-400), or a checkpoint prefix or "
             "directory, local or gs:// (default: default)")
    add("--flow-checkpoint", metavar="SPEC",
        help="flow weights (required for the flow stream): a checkpoint prefix or "
             "directory, local or gs:// (the release's flow_imagenet or flow_scratch)")
    add("--top-k", type=positive(int), default=5, metavar="K", help="labels kept per clip (default: 5)")
    add_crops_option(parser)
    add("--batch-size", type=positive(int), default=8, metavar="N",
        help="most clips (or windows) a batch, whatever --crops (default: 8); "
             "--max-batch-frames bounds each forward")
    add("--max-batch-frames", type=positive(int), default=2000, metavar="F",
        help="most frames in one forward, both streams and every crop counted (default: "
             "2000); caps GPU memory for batches of long clips")
    add("--model-copies", type=positive(int), default=None, metavar="N",
        help="load this many models per machine, shared across worker processes (use 1 "
             "per GPU on GPU workers); default: one model per worker process")
    add("--allow-tf32", action="store_true",
        help="let Ampere-or-newer GPUs compute in TensorFloat-32 (10-bit mantissas): "
             "faster, but less close to the published model (default: float32)")
    add("--require-gpu", action="store_true",
        help="fail the job where the model loads if TensorFlow sees no GPU there (no "
             "driver, CUDA libraries that do not fit it), instead of scoring on the CPU; "
             "run_dataflow.sh sets it for GPU workers")
    add_model_backend_options(parser)
    add("--no-embeddings", action="store_true",
        help="do not write the 1024-d embeddings (their columns are null)")
    add("--video-template", metavar="TEMPLATE",
        help="build each video URI from the row's columns, e.g. 'gs://b/k400/{split}/"
             "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4'")
    add("--ignore-times", action="store_true",
        help="score whole files, ignoring the manifest's times (files already trimmed)")
    add("--skip-existing", action="store_true",
        help="resume: score only the manifest rows that DIR/scores and DIR/errors do "
             "not settle yet, writing new shards beside the old ones")
    add("--retry-errors", action="store_true",
        help="with --skip-existing: also score again the rows whose earlier error may "
             "pass on a retry (time-outs, crashes, storage, out of memory); bad rows "
             "and files that are not videos stay settled")
    add("--overwrite", action="store_true",
        help="replace what DIR holds, if DIR is a score output of the same recipe: its "
             "result directories are deleted before the run")
    add("--max-error-rate", type=fraction, metavar="R",
        help="exit with status 5 (after writing everything) when more than this "
             "fraction (0-1) of the manifest's rows failed (with --window: of the "
             "windows, and rows without windows); default: only when some failed and "
             "none scored")
    add("--shard-rows", type=positive(int), default=500, metavar="N",
        help="rows per output shard: results become durable every N rows per worker "
             "(default: 500)")
    add("--shard-seconds", type=positive(float), default=120.0, metavar="S",
        help="... or S seconds after a shard's first row, whichever comes first "
             "(default: 120)")
    windows = parser.add_argument_group(
        "windows", "untrimmed videos: score every window of each row instead of one clip "
        "(writes DIR/windows, DIR/timelines and DIR/plans instead of DIR/scores)")
    windows.add_argument(
        "--window", type=positive(float), metavar="SEC",
        help="score consecutive windows of SEC seconds covering each row's range (the "
             "whole video, or its start_sec..end_sec); --max-seconds does not apply")
    windows.add_argument(
        "--stride", type=positive(float), metavar="SEC",
        help="seconds from one window's start to the next (default: the window); a "
             "multiple of 0.04 s (whole 25-fps frames)")
    windows.add_argument(
        "--window-frames", type=positive(int), metavar="W",
        help="score windows of W frames instead (at --fps), the layout of published "
             "feature sets: frames [k*S, k*S+W) of each row's range, full windows only "
             "(T = (N - W) // S + 1); a range shorter than W frames gives one window "
             "looped to W. Not with --window")
    windows.add_argument(
        "--stride-frames", type=positive(int), metavar="S",
        help="with --window-frames: frames from one window's start to the next (default: "
             "W)")
    windows.add_argument(
        "--fps", type=fps_argument, metavar="native|N",
        help="with --window-frames: 'native' takes every decoded frame in presentation "
             "order (no resampling; the rate is recorded per video in DIR/plans, and a "
             "variable frame rate flagged); N resamples to N fps by the recipe's rule "
             "(default: the recipe's 25)")
    windows.add_argument(
        "--preset", metavar="NAME",
        help="the options of a published feature set (--streams, --window-frames, "
             "--stride-frames, --fps); options given beside it override it, and the "
             "run's metadata says so; see --list-presets")
    windows.add_argument(
        "--list-presets", action=ListPresets, nargs=0,
        help="print the presets (options, source, what differs here) and exit")
    windows.add_argument(
        "--windows-per-item", type=positive(int), metavar="N",
        help="windows per work item, decoded together by one worker (default: as many "
             "as span about 60 s of video)")
    add("--decode-processes", type=positive(int), metavar="N",
        help="child processes decoding clips on each worker (default: the worker's CPU "
             "count)")
    add("--quiet", action="store_true", help="no progress line on stderr")
    add("--no-wait", action="store_true",
        help="remote runners (Dataflow): return once the job is submitted (exit 0), "
             "printing its id, console URL, how to cancel it and the verify command to "
             "check its output later; without it the launcher waits, then reconciles "
             "the output whatever the job's end")
    add("--dry-run", action="store_true",
        help="validate without running: our options, Beam's pipeline options for the "
             "runner, local checkpoints and manifests, and the pipeline graph; remote "
             "(gs://) inputs are not read")


def fps_argument(text: str):
    """``--fps``: "native", or a whole number of frames per second >= 1."""
    if text.strip().lower() == "native":
        return "native"
    try:
        return positive(int)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(
            f"expected 'native' or a whole number of frames per second >= 1 ({e})") from None


class ListPresets(argparse.Action):
    """``--list-presets``: print the preset table and exit 0 (needs no other option)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from beam_i3d.job.presets import listing

        sys.stdout.write(listing())
        parser.exit(0)


def _apply_preset(args: argparse.Namespace) -> tuple[str | None, tuple[str, ...]]:
    """Lay ``--preset``'s options under those given (in place); ``(preset name, options
    overridden)``. Usage errors: an unknown preset (naming the choices), a preset with
    --window/--stride, and a preset run without the weights its set was made with."""
    if args.preset is None:
        if args.streams is None:
            args.streams = ("rgb",)
        return None, ()
    from beam_i3d.job.presets import apply, preset

    try:
        chosen = preset(args.preset)
    except KeyError as e:
        raise UsageExit(f"beam-i3d score: error: --preset: {e.args[0]}") from None
    if args.window is not None or args.stride is not None:
        raise UsageExit("beam-i3d score: error: --preset sets frame windows "
                        "(--window-frames/--stride-frames); --window/--stride cannot "
                        "go with it")
    given = {k: getattr(args, k) for k in ("streams", "window_frames", "stride_frames", "fps")}
    options, overridden = apply(args.preset, given)
    for key, value in options.items():
        setattr(args, key, value)
    missing = [s for s in args.streams
               if (s == "rgb" and args.rgb_checkpoint == "default")
               or (s == "flow" and not args.flow_checkpoint)]
    if missing:
        raise UsageExit(
            f"beam-i3d score: error: --preset {chosen.name} was made with the release's "
            f"{' and '.join(chosen.weights[s] for s in args.streams)} weights: pass "
            + " ".join(f"--{s}-checkpoint <{chosen.weights[s]} checkpoint>" for s in missing)
            + " (download them from https://github.com/deepmind/kinetics-i3d/tree/master/"
              "data/checkpoints; the default RGB weights are rgb_scratch)")
    return chosen.name, overridden


def _window_options(args: argparse.Namespace):
    """The WindowOptions of --window/--stride or --window-frames/--stride-frames/--fps
    (None: not windowed); usage errors for a mix or a bad value, naming the options."""
    from beam_i3d.job.windows import WindowOptions, check_frame_options, check_window_options

    seconds = args.window is not None or args.stride is not None
    frames = args.window_frames is not None or args.stride_frames is not None
    if seconds and frames:
        raise UsageExit("beam-i3d score: error: --window/--stride (seconds) and "
                        "--window-frames/--stride-frames (frames) are two ways to give the "
                        "windows: use one pair or the other")
    if args.fps is not None and args.window_frames is None:
        raise UsageExit("beam-i3d score: error: --fps needs --window-frames (windows in "
                        "seconds are always at the recipe's 25 fps)")
    if args.stride_frames is not None and args.window_frames is None:
        raise UsageExit("beam-i3d score: error: --stride-frames needs --window-frames")
    if frames:
        from beam_i3d.media.recipe import SAMPLE_FPS

        fps = SAMPLE_FPS if args.fps is None else args.fps
        try:
            check_frame_options(args.window_frames, args.stride_frames, fps)
        except ValueError as e:
            raise UsageExit(f"beam-i3d score: error: {e}") from None
        return WindowOptions(per_item=args.windows_per_item,
                             window_frames=args.window_frames,
                             stride_frames=args.stride_frames, fps=fps)
    if args.window is None:
        for name in ("stride", "windows_per_item"):
            if getattr(args, name) is not None:
                raise UsageExit(f"beam-i3d score: error: --{name.replace('_', '-')} needs "
                                "--window or --window-frames")
        return None
    try:
        check_window_options(args.window, args.stride)
    except ValueError as e:
        raise UsageExit(f"beam-i3d score: error: {e}") from None
    return WindowOptions(args.window, args.stride, args.windows_per_item)


def options_from_args(args: argparse.Namespace):
    from beam_i3d.job.outputs import check_output_location
    from beam_i3d.job.pipeline import new_run_id
    from beam_i3d.job.score_options import ScoreOptions

    preset_name, overridden = _apply_preset(args)
    if "flow" in args.streams and not args.flow_checkpoint:
        raise UsageExit(f"beam-i3d score: error: {FLOW_CHECKPOINT_HELP}")
    if args.skip_existing and args.overwrite:
        raise UsageExit("beam-i3d score: error: --skip-existing (resume) and --overwrite "
                        "(replace) contradict each other: pick one")
    if args.retry_errors and not args.skip_existing:
        raise UsageExit("beam-i3d score: error: --retry-errors needs --skip-existing "
                        "(it retries the failed rows of an earlier run into the same output)")
    from beam_i3d.job.backends import conflicting_options

    conflict = conflicting_options(args.model_backend, args.precision, args.require_gpu)
    if conflict:
        raise UsageExit(f"beam-i3d score: error: {conflict}")
    window = _window_options(args)
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
        require_gpu=args.require_gpu,
        model_backend=args.model_backend,
        precision=args.precision,
        embeddings=not args.no_embeddings,
        video_template=args.video_template,
        ignore_times=args.ignore_times,
        skip_existing=args.skip_existing,
        retry_errors=args.retry_errors,
        overwrite=args.overwrite,
        shard_rows=args.shard_rows,
        shard_seconds=args.shard_seconds,
        quantize_flow=args.quantize_flow,
        flow_backend=args.flow_backend,
        flow_batch_pairs=args.flow_batch_pairs,
        limits=decode_limits_from_args(args),
        decode_processes=args.decode_processes,
        window=window,
        run_id=new_run_id(),
        preset=preset_name,
        overridden=overridden,
        crops=args.crops,
    )


def check_checkpoints(options, local_only: bool = False) -> tuple[int, tuple]:
    """An usable output location (checked before the model loads), and checkpoints that
    can be read and fit each other. Returns the class count (400 where no checkpoint
    could be read) and the weights' identity by stream (``((stream, identity), ...)``,
    :func:`model.weights.weights_identity`; remote ones are not read with
    ``local_only``)."""
    from beam_i3d.errors import ConfigurationError, ModelError
    from beam_i3d.job.outputs import check_output_location

    check_output_location(options.output)
    try:
        classes, weights = _checkpoint_classes(options, local_only)
    except ModelError as e:
        # Weights that cannot be read or do not fit: the run cannot start (exit 3).
        raise ConfigurationError(str(e)) from e
    if len(set(classes.values())) > 1:
        raise ConfigurationError("the streams' class counts differ: " + ", ".join(
            f"{s} {n}" for s, n in classes.items()))
    return next(iter(classes.values()), 400), tuple(weights.items())


def check_inputs(options, local_only: bool = False) -> None:
    """Manifests that match, have a known format and are UTF-8 text, and storage (the
    videos' buckets, a remote output) that can be reached with the credentials at hand
    (see :mod:`beam_i3d.job.launch_checks`). With ``local_only``, remote inputs and
    outputs are not read (a dry run)."""
    from beam_i3d import fileio
    from beam_i3d.job import launch_checks

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


def check_backend_at_launch(options, pipeline_options) -> None:
    """BackendUnavailable (exit 3, one line) for a backend that is not installed, or
    bf16 on a CPU without it where the workers run on this machine."""
    from beam_i3d.job.backends import check_at_launch
    from beam_i3d.job.launch import workers_see_local_disk

    check_at_launch(options.model_backend, options.precision,
                    workers_here=workers_see_local_disk(pipeline_options))


def _checkpoint_classes(options, local_only: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Class count and weights identity by stream of the checkpoints that can be checked
    here; raises ModelError (unreadable, mismatched, default weights not fetched)."""
    from beam_i3d import fileio
    from beam_i3d.job.output_record import NOT_READ
    from model import default_weights

    classes, weights = {}, {}
    for stream in options.streams:
        spec = getattr(options, f"{stream}_checkpoint")
        if spec == "default" and stream == "rgb":
            # Fetched and converted if need be; checked strictly when it was converted.
            # Skipping the read here spares the launcher TensorFlow's import (~4 s).
            default_weights.default_checkpoint()
            classes[stream] = default_weights.NUM_CLASSES
            weights[stream] = "rgb_scratch"
            continue
        if local_only and not (spec == "default" or fileio.is_local(spec)):
            print(f"dry run: not reading remote {stream} checkpoint {spec}", file=sys.stderr)
            weights[stream] = NOT_READ
            continue
        from model.weights import check_stream_checkpoint, weights_identity

        classes[stream] = check_stream_checkpoint(spec, stream).num_classes
        weights[stream] = weights_identity(spec, stream)
    return classes, weights


def check_output_recipe(options, num_classes: int) -> dict:
    """Refuse, before anything is written or deleted, an output that another command
    wrote or that records another recipe (:mod:`beam_i3d.job.output_record`); returns
    this run's recipe."""
    from beam_i3d.job import output_record

    recipe = output_record.score_recipe(options, num_classes)
    output_record.check_output_recipe(
        options.output, "score", recipe, overwrite=options.overwrite,
        from_legacy=output_record.score_recipe_from_metadata)
    return recipe


def claim_output(options, recipe: dict, dry_run: bool) -> None:
    """Settle what the output holds (:func:`beam_i3d.job.shards.prepare_output`: resume,
    replace or refuse), then record this run's recipe there (not in a dry run)."""
    from beam_i3d import __version__
    from beam_i3d.job import output_record
    from beam_i3d.job.shards import prepare_output

    prepare_output(options.output, skip_existing=options.skip_existing,
                   overwrite=options.overwrite, dry_run=dry_run)
    if not dry_run:
        output_record.write_record(options.output, output_record.OutputRecord(
            "score", recipe, options.run_id, __version__))


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


def warn_about_running_mode(pipeline_options) -> None:
    from apache_beam.options.pipeline_options import DirectOptions

    if pipeline_options.view_as(DirectOptions).direct_running_mode == "multi_threading":
        print("beam-i3d score: warning: Beam 2.77's DirectRunner loses elements in "
              "multi_threading mode (and exits 0); the counts are checked at the end, but "
              "prefer the default in_memory or multi_processing", file=sys.stderr)


def verify_command(options) -> str:
    """The ``beam-i3d verify`` command that checks this run's output against its
    manifest (after the run, or later for a job left running)."""
    return (f"beam-i3d verify --manifest '{options.manifest}' --output '{options.output}'"
            + (f" --video-template '{options.video_template}'"
               if options.video_template else "")
            + (" --ignore-times" if options.ignore_times else ""))


def finish(options, expected, skipped: int, max_error_rate: float | None,
           state: str | None = None) -> int:
    """Reconcile the output against the manifest after a run; print the outcome and
    return the exit status (docs/commands/index.md, "Exit codes")."""
    from beam_i3d.cli import EXIT_ERROR_RATE, EXIT_OK, EXIT_RECONCILIATION
    from beam_i3d.job.verify import reconcile_output

    windowed = options.window is not None
    result = reconcile_output(expected, options.output, options.run_id, skipped, windowed)
    if windowed:  # windows settled before this run
        result.skipped = skipped = (result.scored + result.failed
                                    - result.run_scored - result.run_failed)
    for line in result.summary_lines():
        print(f"beam-i3d score: {line}", file=sys.stderr)
    verify = verify_command(options)
    if not result.ok:
        print(f"beam-i3d score: error: {len(result.missing):,} of "
              f"{result.manifest_rows:,} {result.what} are in neither output"
              + (f" (the job ended {state})" if state else "")
              + f"; resume with --skip-existing; check again with: {verify}",
              file=sys.stderr)
        return EXIT_RECONCILIATION
    rate = result.failed / result.manifest_rows if result.manifest_rows else 0.0
    unit = result.what if windowed else "rows"  # what the rate counts
    print(f"beam-i3d score: run {options.run_id}: {result.run_scored:,} scored, "
          f"{result.run_failed:,} failed, {skipped:,} skipped as already settled; all "
          f"{result.manifest_rows:,} {result.what} accounted for in {options.output}",
          file=sys.stderr)
    if max_error_rate is not None and rate > max_error_rate:
        print(f"beam-i3d score: error: {result.failed:,} of {result.manifest_rows:,} {unit} "
              f"failed ({rate:.1%}), over --max-error-rate {max_error_rate:g}",
              file=sys.stderr)
        return EXIT_ERROR_RATE
    if max_error_rate is None and result.failed and not result.scored:
        print(f"beam-i3d score: error: all {result.failed:,} {unit} failed, none scored "
              f"(see {options.output}/errors; --max-error-rate 1 accepts this)",
              file=sys.stderr)
        return EXIT_ERROR_RATE
    return EXIT_OK


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    import dataclasses
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_i3d import fileio
    from beam_i3d.job.gpu import gpu_failure_as_error
    from beam_i3d.job.launch import before_launch
    from beam_i3d.job.pipeline import build_pipeline
    from beam_i3d.job.progress import ShardProgress, run_with_progress, settled_earlier
    from beam_i3d.job.remote_job import RemoteJob, refuse_no_wait, runs_in_process

    options = options_from_args(args)
    if args.no_wait and not args.dry_run:
        refuse_no_wait(PipelineOptions(extra_args))
    before_launch(options, PipelineOptions(extra_args))  # e.g. no local paths on Dataflow
    check_backend_at_launch(options, PipelineOptions(extra_args))
    num_classes, weights = check_checkpoints(options, local_only=args.dry_run)
    options = dataclasses.replace(options, weights=weights)
    reads_output = not (args.dry_run and not fileio.is_local(options.output))
    if reads_output:  # dry runs read no remote output
        recipe = check_output_recipe(options, num_classes)
    check_inputs(options, local_only=args.dry_run)
    pipeline_options = PipelineOptions(extra_args)
    warn_about_running_mode(pipeline_options)
    if args.dry_run:
        from apache_beam.options.pipeline_options import TestOptions

        # Beam's own dry-run flag: its option checks then skip their GCS look-ups.
        pipeline_options.view_as(TestOptions).dry_run = True
    validate_pipeline_options(pipeline_options)
    if reads_output:
        claim_output(options, recipe, dry_run=args.dry_run)
    if args.dry_run:
        # Build the graph on a runner that is never started, and serialise it as a
        # runner would: catches unpicklable DoFns and bad transform wiring.
        pipeline = beam.Pipeline(runner="DirectRunner", options=pipeline_options)
        build_pipeline(pipeline, options, num_classes)
        transforms = len(pipeline.to_runner_api().components.transforms)
        print(f"dry run: options valid, pipeline of {transforms} transforms built; "
              "nothing was run", file=sys.stderr)
        return 0
    from beam_i3d.job.verify import expected_rows

    # The launcher reads the manifests itself: the total for the progress line, and
    # the rows the output must account for at the end.
    expected = expected_rows(options.manifest, options.manifest_options)
    windowed = options.window is not None
    earlier = (settled_earlier(expected, options.output, options.retry_errors, windowed)
               if options.skip_existing else None)
    skipped = earlier.settled if earlier else 0  # rows not scored again
    # Local worker processes forward their start-up warnings (unparsed options, no
    # semi-persistent directory) through this logger; errors still come through.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        logging.ERROR)
    pipeline = beam.Pipeline(options=pipeline_options)
    build_pipeline(pipeline, options, num_classes)
    job = (None if runs_in_process(pipeline_options)
           else RemoteJob(pipeline_options, verify_command(options)))
    source = None if args.quiet else ShardProgress(options.output, options.run_id,
                                                   len(expected), earlier, windowed)
    interval = None if fileio.is_local(options.output) else 10.0
    if job is not None:  # a remote runner: checked whatever the job's end (remote_job)
        return job.run(
            lambda **kw: run_with_progress(pipeline, None if args.no_wait else source,
                                           interval=interval, **kw),
            lambda state: finish(options, expected, skipped, args.max_error_rate, state),
            wait=not args.no_wait)
    with gpu_failure_as_error():  # a worker without a GPU: one line, not a traceback
        result = run_with_progress(pipeline, source, interval=interval)
    state = getattr(result, "state", None)
    return finish(options, expected, skipped, args.max_error_rate,
                  None if state in (None, "DONE") else str(state))
