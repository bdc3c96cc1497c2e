"""``beam-i3d export``: write the I3D model as a TensorFlow SavedModel."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rgb-checkpoint", metavar="SPEC",
        help="RGB stream weights: 'default' (bundled Kinetics-400 RGB), a checkpoint "
             "prefix (.../model.ckpt) or its directory, local or gs://. Default: 'default' "
             "when no --flow-checkpoint is given.")
    parser.add_argument(
        "--flow-checkpoint", metavar="SPEC",
        help="flow stream weights: a checkpoint prefix or directory, local or gs:// "
             "(e.g. the release's data/checkpoints/flow_imagenet).")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="directory for the SavedModel (local or gs://)")


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    from beam_i3d import __version__
    from beam_i3d.job.outputs import check_output_location
    from model.export import build_model, export_saved_model

    # Before the model is built: an existing file, a root or an unwritable place is
    # one line and exit status 3, not a TensorFlow traceback after the build.
    check_output_location(args.out, option="--out")
    rgb = args.rgb_checkpoint
    if rgb is None and args.flow_checkpoint is None:
        rgb = "default"
    model = build_model(rgb, args.flow_checkpoint)
    export_saved_model(model, args.out, beam_i3d_version=__version__)
    print(f"SavedModel written to {args.out} (streams: {', '.join(model.stream_names)}; "
          f"{model.num_classes} classes; signatures serving_default, serving_uint8)")
    return 0
