"""``beam-i3d fvd``: the Fréchet Video Distance of two video sets (a Beam job).

``--real`` and ``--fake`` are each a manifest (the formats ``score`` reads) or a
statistics file (``.npz`` from an earlier run, or a StyleGAN-V / cd-fvd ``FeatureStats``
pickle). The sides given as manifests are computed by one Beam pipeline
(:mod:`beam_i3d.fvd.pipeline`); every other argument is a Beam pipeline option, as for
``score`` (DirectRunner by default). Prints the FVD and writes ``DIR/fvd.json``,
``DIR/stats/{real,fake}.npz``, ``DIR/clips/`` and ``DIR/errors/`` (per-clip outcomes).
"""

from __future__ import annotations

import argparse
import json
import sys

from beam_i3d.cli import UsageExit
from beam_i3d.cli.options import add_model_backend_options, fraction, positive

PROTOCOLS = ("original", "styleganv")
# What the statistics of each protocol are computed by (recorded in every output).
WEIGHTS = "rgb_scratch"  # the default weights: the release's rgb_scratch (docs/weights.md)
FEATURES = "logits_mean"  # RGB/inception_i3d/Mean: 400-d logits averaged over time
# --features NAME -> the model output taken (see model/export.py)
FEATURE_OUTPUTS = {"logits_mean": "rgb_logits", "mixed_5c": "rgb_embedding"}
COVARIANCE = {"original": "unbiased", "styleganv": "biased"}
# --resize NAME -> clips.RESIZES; each protocol's own is in clips.PROTOCOL_RESIZE
RESIZE_NAMES = {"tf1": "tf1_bilinear", "torch": "torch_linear", "kinetics": "kinetics_crop"}
MIN_CLIPS = 2
# StyleGAN-V (src/metrics/metric_main.py): fvd2048_16f, fvd2048_128f and
# fvd2048_128f_subsample8f take the first 2048 clips of each set; (frames, subsample) ->
# the metric's name. Other frame counts or steps are --nonstandard under styleganv.
STYLEGANV_CLIPS = 2048
STYLEGANV_METRICS = {(16, 1): "fvd2048_16f", (128, 1): "fvd2048_128f",
                     (16, 8): "fvd2048_128f_subsample8f"}
# What styleganv does that could not be read or reproduced (docs/commands/fvd.md, Protocols); recorded
# in fvd.json's "unverified".
STYLEGANV_UNVERIFIED = [
    "resize: StyleGAN-V resizes inside its TorchScript detector (resize=True), whose code "
    "was not available; PyTorch's linear interpolation to 224x224 (align_corners=False, "
    "no antialiasing, time untouched) is assumed",
    "real clip starts: StyleGAN-V draws them with Python's random in its data-loader "
    "workers; ours are uniform over the same range but seeded (--seed), not the same draws",
]


def frames_argument(text: str) -> int:
    from beam_i3d.media.recipe import MIN_FRAMES

    value = positive(int)(text)
    if value < MIN_FRAMES:
        raise argparse.ArgumentTypeError(
            f"I3D needs at least {MIN_FRAMES} frames, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from beam_i3d.cli.options import add_decode_limit_options

    parser.usage = ("beam-i3d fvd --real SPEC [--fake SPEC] --output DIR [options] "
                    "[Beam pipeline options]")
    parser.epilog = ("SPEC: a manifest (CSV, JSON Lines, Parquet; globs allowed) of clips, "
                     "or statistics (.npz from an earlier fvd, or a StyleGAN-V FeatureStats "
                     ".pkl). Arguments not listed here are Beam pipeline options.")
    add = parser.add_argument
    add("--real", required=True, metavar="SPEC", help="the reference set")
    add("--fake", metavar="SPEC",
        help="the generated set; without it only the statistics of --real are computed "
             "(reference statistics, reused later as a SPEC)")
    add("--output", required=True, metavar="DIR",
        help="writes DIR/fvd.json, DIR/stats/{real,fake}.npz, DIR/clips/ and DIR/errors/")
    add("--protocol", choices=PROTOCOLS, default="original",
        help="original (default): google-research frechet_video_distance: first N frames, "
             "TF1 bilinear resize to 224x224, unbiased covariance; styleganv: StyleGAN-V's "
             "fvd2048_*: the first 2048 clips of each set, real clips from a random "
             "start, PyTorch bilinear resize (assumed: see the manual's FVD page), biased "
             "covariance")
    add("--frames", type=frames_argument, default=16, metavar="N",
        help="frames per clip (default 16, at least 9); styleganv: 16 or 128")
    add("--subsample", type=positive(int), default=1, metavar="K",
        help="take every K-th frame (styleganv: 8 with --frames 16 is "
             "fvd2048_128f_subsample8f); a clip needs N*K frames (default 1)")
    add("--seed", type=int, default=None, metavar="S",
        help="styleganv: seed of the real clips' random starts (default 0)")
    add("--nonstandard", action="store_true",
        help="allow what departs from the protocol (--checkpoint, --features, --resize, "
             "other frames or steps); the outputs record it")
    add("--checkpoint", default="default", metavar="SPEC",
        help="RGB weights, as score's --rgb-checkpoint (default: the bundled rgb_scratch; "
             "other weights need --nonstandard)")
    add("--features", choices=sorted(FEATURE_OUTPUTS), default=FEATURES,
        help="logits_mean (default): the logits averaged over time; mixed_5c: Mixed_5c "
             "averaged over time and space, 1024-d (needs --nonstandard)")
    add("--resize", choices=sorted(RESIZE_NAMES), default=None,
        help="tf1 (original's), torch (styleganv's) or kinetics (score's short side 256 + "
             "centre crop); another than the protocol's needs --nonstandard")
    add("--video-template", metavar="TEMPLATE",
        help="build each video URI from the manifest row's columns (as for score)")
    add("--batch-size", type=positive(int), default=8, metavar="N", help="most clips a batch (default: 8)")
    add("--max-batch-frames", type=positive(int), default=2000, metavar="F",
        help="most frames in one forward (default: 2000)")
    add("--model-copies", type=positive(int), default=None, metavar="N",
        help="models per machine shared by the worker processes (1 per GPU)")
    add("--allow-tf32", action="store_true",
        help="let Ampere-or-newer GPUs use TensorFloat-32 (moves the FVD; default float32)")
    add("--require-gpu", action="store_true",
        help="fail where the model loads if TensorFlow sees no GPU there")
    add_model_backend_options(parser)
    add("--max-error-rate", type=fraction, metavar="R",
        help="exit 5 when more than this fraction of a side's rows failed (default: "
             "report the failures and go on)")
    add("--overwrite", action="store_true",
        help="replace what DIR holds from an earlier fvd run")
    add("--shard-rows", type=positive(int), default=500, metavar="N",
        help="per-clip outcome rows per shard (default: 500)")
    add("--shard-seconds", type=positive(float), default=120.0, metavar="S",
        help="... or seconds after a shard's first row (default: 120)")
    add_decode_limit_options(parser, (
        "as for score: every input (video file, frame directory or array) is counted and "
        "read in a decoding child process, so one that crashes, hangs or exhausts its "
        "reader is one error row (DecoderCrashed, DecodeTimeout, DecodeOutOfMemory)"))
    add("--decode-processes", type=positive(int), metavar="N",
        help="child processes reading clips on each worker (default: the worker's CPU "
             "count)")
    add("--dry-run", action="store_true",
        help="validate options, inputs, the output and the pipeline graph; run nothing")


def _limits(args):
    from beam_i3d.media.recipe import DecodeLimits

    return DecodeLimits(max_pixels=args.max_pixels, max_duration_seconds=args.max_duration,
                        decode_timeout_seconds=args.decode_timeout,
                        max_aspect_ratio=args.max_aspect_ratio,
                        memory_mb=args.decode_memory_mb)


def resize_of(args) -> str:
    from beam_i3d.fvd.clips import PROTOCOL_RESIZE

    return RESIZE_NAMES[args.resize] if args.resize else PROTOCOL_RESIZE[args.protocol]


def deviations(args) -> list[str]:
    """What the arguments change from the protocol (each needs --nonstandard)."""
    from beam_i3d.fvd.clips import PROTOCOL_RESIZE

    found = []
    if args.checkpoint != "default":
        found.append(f"--checkpoint {args.checkpoint}")
    if args.features != FEATURES:
        found.append(f"--features {args.features}")
    if resize_of(args) != PROTOCOL_RESIZE[args.protocol]:
        found.append(f"--resize {args.resize}")
    if args.protocol == "original" and args.subsample != 1:
        found.append(f"--subsample {args.subsample}")
    if args.precision != "f32":
        found.append(f"--precision {args.precision} (the protocols compute in float32)")
    if args.protocol == "styleganv" and (args.frames, args.subsample) not in STYLEGANV_METRICS:
        found.append(f"--frames {args.frames} --subsample {args.subsample} (StyleGAN-V "
                     "defines 16, 128, and 16 every 8)")
    return found


def check_arguments(args) -> list[str]:
    """Usage errors (exit 2, one line); returns the deviations allowed by --nonstandard."""
    prog = "beam-i3d fvd"
    if args.seed is not None and args.protocol != "styleganv":
        raise UsageExit(f"{prog}: error: --seed is for styleganv's random clip starts; the "
                        f"{args.protocol} protocol takes the first frames")
    from beam_i3d.job.backends import conflicting_options

    conflict = conflicting_options(args.model_backend, args.precision, args.require_gpu)
    if conflict:
        raise UsageExit(f"{prog}: error: {conflict}")
    found = deviations(args)
    if found and not args.nonstandard:
        raise UsageExit(f"{prog}: error: {'; '.join(found)}: not the {args.protocol} "
                        "protocol; pass --nonstandard to compute it anyway (the outputs "
                        "record it)")
    return found


def weights_identity(spec: str) -> str:
    """``rgb_scratch`` for the default weights (and any checkpoint holding exactly its
    tensors); otherwise ``tensors-sha256:<16 hex>`` (:func:`model.weights.weights_identity`)."""
    from model.weights import weights_identity as identity

    return identity(spec, "rgb")


def fvd_recipe(args, identity: dict) -> dict:
    """What an fvd output's numbers depend on, recorded in ``DIR/recipe.json``
    (:mod:`beam_i3d.job.output_record`): the statistics' identity, the clip starts'
    seed, the clips taken per side, the template, TF32."""
    return {**identity,
            "seed": (0 if args.seed is None else args.seed) if args.protocol == "styleganv"
            else None,
            "max_clips": STYLEGANV_CLIPS if args.protocol == "styleganv" else None,
            "video_template": args.video_template,
            "precision": args.precision,  # the backend at f32 does not enter (see score's)
            "allow_tf32": bool(args.allow_tf32)}


def identity_of(args, weights: str = WEIGHTS) -> dict:
    return {"protocol": args.protocol, "frames": args.frames, "subsample": args.subsample,
            "resize": resize_of(args), "weights": weights, "features": args.features,
            "covariance": COVARIANCE[args.protocol], "precision": args.precision}


def clip_specs(args) -> dict:
    """side -> clips.ClipSpec: styleganv's real clips start at a seeded random frame
    (StyleGAN-V's load_n_consecutive_random_offset), its fake clips and every clip of
    the original protocol at frame 0."""
    from beam_i3d.fvd.clips import ClipSpec

    seed = 0 if args.seed is None else args.seed
    resize = resize_of(args)
    return {side: ClipSpec(frames=args.frames, subsample=args.subsample, resize=resize,
                           seed=seed,
                           start="random" if (args.protocol == "styleganv"
                                              and side == "real") else "first")
            for side in ("real", "fake")}


def metric_name(args) -> str | None:
    """StyleGAN-V's name of the metric computed, when it is one of its three."""
    if args.protocol != "styleganv" or deviations(args):
        return None
    return STYLEGANV_METRICS[(args.frames, args.subsample)]




def prepare_output(output: str, overwrite: bool, dry_run: bool) -> None:
    """Refuse an output holding an earlier fvd run unless ``overwrite`` (then remove it)."""
    from apache_beam.io.filesystems import FileSystems

    from beam_i3d import fileio
    from beam_i3d.errors import OutputError

    from beam_i3d.job.output_record import COMMAND_FILES

    found = [p for p in COMMAND_FILES["fvd"] if FileSystems.exists(fileio.join(output, p))]
    if not found:
        return
    if not overwrite:
        raise OutputError(f"{output} already holds an fvd run ({', '.join(found)}): pass "
                          "--overwrite to replace it, or choose another --output")
    if dry_run:
        return
    if fileio.is_local(output):
        import os
        import shutil

        for p in found:
            path = os.path.join(fileio.local_path(output), p)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return
    for p in found:
        base = fileio.join(output, p)
        matched = FileSystems.match([base, base + "/**"])
        FileSystems.delete([m.path for r in matched for m in r.metadata_list])


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_i3d import fileio
    from beam_i3d.job import launch_checks
    from beam_i3d.cli import EXIT_ERROR_RATE, EXIT_OK, EXIT_RECONCILIATION
    from beam_i3d.errors import ConfigurationError
    from beam_i3d.fvd.pipeline import FvdOptions, build_pipeline, reconcile, stats_path
    from beam_i3d.fvd.stats_files import check_compatible, is_stats_spec, read_stats, save_npz
    from beam_i3d.job.launch import before_launch
    from beam_i3d.job.outputs import check_output_location
    from beam_i3d.job.pipeline import new_run_id
    from beam_i3d.cli.score import validate_pipeline_options
    from beam_i3d.job.verify import expected_rows
    from model import default_weights

    from beam_i3d.job import output_record

    prog = "beam-i3d fvd"
    found = check_arguments(args)
    output = check_output_location(args.output)
    weights_read = not (args.dry_run and not fileio.is_local(args.checkpoint))
    identity = identity_of(args, weights_identity(args.checkpoint) if weights_read
                           else args.checkpoint)
    recipe = fvd_recipe(args, identity if weights_read
                        else {**identity, "weights": output_record.NOT_READ})
    reads_output = not (args.dry_run and not fileio.is_local(output))  # dry: no remote
    if reads_output:  # before anything is read, written or deleted
        output_record.check_output_recipe(output, "fvd", recipe, overwrite=args.overwrite)
    specs_by_side = clip_specs(args)
    specs = {"real": args.real, "fake": args.fake}
    if args.fake is None:
        if is_stats_spec(args.real):
            raise UsageExit(f"{prog}: error: --real is already statistics: give --fake "
                            "to compare it with something")
        del specs["fake"]
    given = {}  # side -> statistics read from a file
    manifests = {}
    for side, spec in specs.items():
        if is_stats_spec(spec):
            if args.dry_run and not fileio.is_local(spec):
                print(f"dry run: not reading remote statistics {spec}", file=sys.stderr)
                continue
            given[side] = read_stats(spec, **identity)
            if given[side].assumed:
                print(f"{prog}: warning: {spec} records no protocol; taken as protocol "
                      f"{args.protocol}, {args.frames} frames, weights "
                      f"{identity['weights']}", file=sys.stderr)
        else:
            manifests[side] = spec
    # Refuse mismatched statistics before any work.
    from beam_i3d.fvd.distance import Moments
    from beam_i3d.fvd.stats_files import FeatureSetStats

    planned = {s: given.get(s) or FeatureSetStats(Moments(), source=specs[s], **identity)
               for s in specs}
    if len(planned) == 2:
        check_compatible(planned["real"], planned["fake"])
    for side in given:  # and statistics computed otherwise than the command line says
        check_compatible(given[side], FeatureSetStats(
            Moments(), source="the command line's options", **identity))

    options = FvdOptions(
        output=output, manifests=manifests, protocol=args.protocol, frames=args.frames,
        identity=identity, specs=specs_by_side,
        max_clips=STYLEGANV_CLIPS if args.protocol == "styleganv" else None,
        checkpoint=args.checkpoint, feature=FEATURE_OUTPUTS[args.features],
        clip_starts={s: specs_by_side[s].describe_start() for s in specs_by_side},
        video_template=args.video_template, recipe=recipe, batch_size=args.batch_size,
        max_batch_frames=args.max_batch_frames, model_copies=args.model_copies,
        allow_tf32=args.allow_tf32, require_gpu=args.require_gpu,
        model_backend=args.model_backend, precision=args.precision,
        limits=_limits(args), decode_processes=args.decode_processes,
        shard_rows=args.shard_rows,
        shard_seconds=args.shard_seconds, run_id=new_run_id())
    expected = {}
    if manifests:
        pipeline_options = PipelineOptions(extra_args)
        refuse_local_paths(specs, manifests, output, args.video_template, pipeline_options)
        before_launch(_LaunchView(options, next(iter(manifests.values()))), pipeline_options)
        from beam_i3d.cli.score import check_backend_at_launch

        check_backend_at_launch(options, pipeline_options)
        if args.checkpoint == "default":
            default_weights.default_checkpoint()
        for side, manifest in manifests.items():
            if args.dry_run and not fileio.is_local(manifest):
                print(f"dry run: not reading remote manifest {manifest}", file=sys.stderr)
                continue
            paths = launch_checks.match_manifests(manifest)
            launch_checks.check_manifest_files(paths)
            expected[side] = expected_rows(manifest, options.manifest_options)
            if len(expected[side]) < MIN_CLIPS:
                raise ConfigurationError(
                    f"the {side} set ({manifest}) has {len(expected[side])} row(s); "
                    f"an FVD needs at least {MIN_CLIPS} clips a side")
        if args.dry_run:
            from apache_beam.options.pipeline_options import TestOptions

            # Beam's own dry-run flag: its option checks then skip their GCS look-ups.
            pipeline_options.view_as(TestOptions).dry_run = True
        validate_pipeline_options(pipeline_options)
    if reads_output:
        prepare_output(output, args.overwrite, args.dry_run)
        if not args.dry_run:
            output_record.write_record(output, output_record.OutputRecord(
                "fvd", recipe, options.run_id, __import__("beam_i3d").__version__))
    if args.dry_run:
        if manifests:
            pipeline = beam.Pipeline(runner="DirectRunner", options=pipeline_options)
            build_pipeline(pipeline, options)
            n = len(pipeline.to_runner_api().components.transforms)
            print(f"dry run: options valid, pipeline of {n} transforms built; nothing was "
                  "run", file=sys.stderr)
        else:
            print("dry run: options valid; both sides are statistics", file=sys.stderr)
        return EXIT_OK

    status = EXIT_OK
    stats = dict(given)
    counts = {}
    if manifests:
        import logging

        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
            logging.ERROR)
        from beam_i3d.job.gpu import gpu_failure_as_error

        pipeline = beam.Pipeline(options=pipeline_options)
        build_pipeline(pipeline, options)
        with gpu_failure_as_error():
            result = pipeline.run()
            result.wait_until_finish()
        counts = reconcile(options)
        for side in manifests:
            c = counts[side]
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.error_types.items()))
            print(f"{prog}: {side}: {c.manifest_rows:,} manifest rows: {c.counted:,} "
                  f"counted, {c.failed:,} failed" + (f" ({kinds})" if kinds else "")
                  + (f", {c.not_selected:,} not selected (beyond the first "
                     f"{options.max_clips:,} eligible)" if c.not_selected else "")
                  + f"; missing {len(c.missing):,}", file=sys.stderr)
            stats[side] = read_stats(stats_path(output, side), **identity)
            if stats[side].n != c.counted:
                print(f"{prog}: error: the {side} statistics hold {stats[side].n:,} clips "
                      f"but {c.counted:,} are recorded as counted", file=sys.stderr)
                status = EXIT_RECONCILIATION
            if c.missing:
                shown = ", ".join(m.row_key for m in c.missing[:10])
                print(f"{prog}: error: {len(c.missing):,} {side} rows are neither counted "
                      f"nor errors: {shown}", file=sys.stderr)
                status = EXIT_RECONCILIATION
        if status != EXIT_OK:
            return status
        for side in manifests:
            c = counts[side]
            rate = c.failure_rate
            if c.failed:
                print(f"{prog}: warning: {c.failed:,} {side} clips failed and are not in "
                      f"the FVD (see {fileio.join(output, 'errors')})", file=sys.stderr)
            if args.max_error_rate is not None and rate > args.max_error_rate:
                print(f"{prog}: error: {c.failed:,} of {c.tried:,} {side} rows "
                      f"failed ({rate:.1%}), over --max-error-rate {args.max_error_rate:g}",
                      file=sys.stderr)
                status = EXIT_ERROR_RATE
    for side in given:  # statistics given as files are copied beside the computed ones
        save_npz(given[side], stats_path(output, side))
    for side in specs:
        if stats[side].n < MIN_CLIPS:
            print(f"{prog}: error: the {side} set has {stats[side].n} clip(s) counted; an "
                  f"FVD needs at least {MIN_CLIPS}", file=sys.stderr)
            return EXIT_ERROR_RATE
    if status != EXIT_OK:
        return status
    about = _about(args, found, options, stats)
    if "fake" not in specs:  # reference statistics only
        record = {"fvd": None, "n_real": stats["real"].n, "n_fake": None,
                  **stats["real"].identity(), "feature_dim": stats["real"].moments.dim,
                  **about, "real": specs["real"],
                  "fake": None, "run_id": options.run_id,
                  "version": __import__("beam_i3d").__version__, "allow_tf32": args.allow_tf32, "warnings": [],
                  "counts": _counts_record(counts)}
        _write_text(fileio.join(output, "fvd.json"), json.dumps(record, indent=2) + "\n")
        print(f"statistics of {stats['real'].n} clips written to "
              f"{stats_path(output, 'real')} (pass it as --real or --fake later)")
        return status
    check_compatible(stats["real"], stats["fake"])
    value, warnings = compute(stats["real"], stats["fake"])
    if args.protocol == "styleganv":
        for side in ("real", "fake"):
            if stats[side].n < STYLEGANV_CLIPS:
                warnings.append(f"the {side} set has {stats[side].n:,} clips; StyleGAN-V's "
                                f"fvd2048_* take {STYLEGANV_CLIPS:,} a side")
    for w in warnings:
        print(f"{prog}: warning: {w}", file=sys.stderr)
    record = {
        "fvd": value, "n_real": stats["real"].n, "n_fake": stats["fake"].n,
        **stats["real"].identity(), "feature_dim": stats["real"].moments.dim, **about,
        "real": specs["real"], "fake": specs["fake"], "run_id": options.run_id,
        "version": __import__("beam_i3d").__version__, "allow_tf32": args.allow_tf32, "warnings": warnings,
        "counts": _counts_record(counts),
    }
    _write_text(fileio.join(output, "fvd.json"), json.dumps(record, indent=2) + "\n")
    name = about["metric"] or args.protocol
    print(f"FVD {value:.4f} ({name}, {args.frames} frames"
          + (f" every {args.subsample}" if args.subsample != 1 else "")
          + (", nonstandard" if found else "")
          + f", n_real {stats['real'].n}, n_fake {stats['fake'].n})")
    return status


def _about(args, found, options, stats) -> dict:
    """What fvd.json records besides the statistics' identity."""
    return {
        "metric": metric_name(args),
        "nonstandard": bool(found), "deviations": found,
        "checkpoint": args.checkpoint,
        "model_backend": args.model_backend, "precision": args.precision,
        "clip_start": {s: stats[s].clip_start for s in stats},
        "max_clips": options.max_clips,
        "unverified": list(STYLEGANV_UNVERIFIED) if args.protocol == "styleganv" else [],
    }


def _counts_record(counts) -> dict:
    return {s: {"manifest_rows": c.manifest_rows, "counted": c.counted, "failed": c.failed,
                "not_selected": c.not_selected, "error_types": c.error_types}
            for s, c in counts.items()}


def compute(real, fake) -> tuple[float, list[str]]:
    """The FVD of two compatible statistics, with the warnings their sizes call for."""
    from beam_i3d.fvd.distance import frechet_distance

    warnings = []
    dim = real.moments.dim
    for side, s in (("real", real), ("fake", fake)):
        if s.n <= dim:
            warnings.append(f"the {side} set has {s.n} clips, not more than the {dim} feature "
                            "dimensions: its covariance is singular and the FVD is biased "
                            "upwards (compare only FVDs of equal set sizes)")
    if real.n != fake.n:
        warnings.append(f"the sets differ in size ({real.n} real, {fake.n} fake): the FVD's "
                        "bias depends on N; published figures use equal sizes")
    value = frechet_distance(real.moments.mean, real.sigma(), fake.moments.mean, fake.sigma())
    return value, warnings


def _write_text(path: str, text: str) -> None:
    from beam_i3d.fvd.stats_files import _write_bytes

    _write_bytes(path, text.encode("utf-8"))


def refuse_local_paths(specs, manifests, output, template, pipeline_options) -> None:
    """A remote runner's workers cannot read this machine's disk: the manifests, the
    output and a template's videos must be remote (statistics files are read here)."""
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_i3d import fileio
    from beam_i3d.errors import ConfigurationError
    from beam_i3d.job.launch import runner_key, workers_see_local_disk

    if workers_see_local_disk(pipeline_options):
        return
    found = [(f"--{side}", spec) for side, spec in specs.items() if side in manifests]
    found.append(("--output", output))
    if template:
        found.append(("--video-template", template))
    local = [f"{flag} {value}" for flag, value in found if fileio.is_local(value)]
    if local:
        runner = pipeline_options.view_as(StandardOptions).runner
        raise ConfigurationError(
            f"the {runner_key(runner)} runner's workers cannot read this machine's disk, "
            f"but these are local: {'; '.join(local)}; copy them to gs:// and pass those "
            "URIs")


class _LaunchView:
    """What :func:`beam_i3d.job.launch.before_launch` looks at, for the fvd options."""

    streams = ("rgb",)
    flow_checkpoint = None

    def __init__(self, options, manifest: str):
        self.manifest = manifest
        self.output = options.output
        self.video_template = options.video_template
        self.rgb_checkpoint = options.checkpoint
