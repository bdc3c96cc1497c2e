"""Options that ``beam-i3d score``, ``preprocess`` and ``fvd`` share, defined once.

Both subcommands decode clips by the same recipe, so they take the same options for it
and validate them the same way: the streams, the longest stretch decoded, the optical
flow settings and the decode limits on untrusted input (:class:`~beam_i3d.media.recipe.
DecodeLimits`). Imports nothing heavy (``--help`` stays quick).
"""

from __future__ import annotations

import argparse
import math

from beam_i3d.media import recipe


def positive(kind):
    """An argparse ``type``: a number of ``kind`` (int or float) that is > 0 (and, for
    floats, finite)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def fraction(text: str) -> float:
    """An argparse ``type``: a number from 0 to 1 (a rate, e.g. ``--max-error-rate``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def aspect_ratio(text: str) -> float:
    """An argparse ``type``: a finite number >= 1 (long side / short side)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 1 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 1 (long side / short side), got {text}")
    return value


def add_clip_options(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``score`` and ``preprocess`` to ``parser``."""
    from beam_i3d.cli import streams_argument

    add = parser.add_argument
    add("--streams", type=streams_argument, default=("rgb",), metavar="rgb|flow|rgb,flow",
        help="I3D streams (default: rgb); flow takes about a second per frame on a CPU; "
             "score sums the logits of both")
    add("--max-seconds", type=positive(float), default=recipe.DEFAULT_MAX_SECONDS,
        metavar="SEC",
        help=f"longest stretch of a clip decoded and scored, in seconds (default: "
             f"{recipe.DEFAULT_MAX_SECONDS:g}, a Kinetics clip of 250 frames)")
    add("--flow-backend", default="tf", choices=["tf", "opencv"],
        help="optical flow: tf (default; TensorFlow port of OpenCV's DualTVL1, batched, on "
             "the GPU if there is one) or opencv (OpenCV's DualTVL1 on the CPU)")
    add("--flow-batch-pairs", type=positive(int), metavar="N",
        help="frame pairs per flow batch for the tf backend (default: 64 on a GPU, 4 on a "
             "CPU); bounds its memory, about 25 MB a pair at 256x340")
    add("--no-quantize-flow", dest="quantize_flow", action="store_false",
        help="feed unquantised float flow (x/20) instead of the release's 256 levels "
             "(recorded in score's output metadata)")
    add_decode_limit_options(parser, "what one video may cost before it is refused (an "
                             "error naming the video, not a crash)")


def add_decode_limit_options(parser: argparse.ArgumentParser, description: str) -> None:
    """Add the decode limits (``score``, ``preprocess``, ``fvd``) to ``parser``, as a
    group described by ``description``."""
    limits = parser.add_argument_group("decode limits", description)
    limits.add_argument(
        "--max-pixels", type=positive(int), default=recipe.DEFAULT_MAX_PIXELS, metavar="N",
        help=f"largest coded frame, width x height (default: {recipe.DEFAULT_MAX_PIXELS}, "
             "4096x4096): VideoTooLarge")
    limits.add_argument(
        "--max-duration", type=positive(float), metavar="SEC",
        default=recipe.DEFAULT_MAX_DURATION_SECONDS,
        help=f"longest source video, in seconds (default: "
             f"{recipe.DEFAULT_MAX_DURATION_SECONDS:g}, 3 hours): VideoTooLong")
    limits.add_argument(
        "--decode-timeout", type=positive(float), metavar="SEC",
        default=recipe.DEFAULT_DECODE_TIMEOUT_SECONDS,
        help=f"wall-clock budget to open, read and decode one clip, in seconds (default: "
             f"{recipe.DEFAULT_DECODE_TIMEOUT_SECONDS:g}; optical flow not included): "
             "DecodeTimeout")
    limits.add_argument(
        "--max-aspect-ratio", type=aspect_ratio, metavar="R",
        default=recipe.DEFAULT_MAX_ASPECT_RATIO,
        help=f"widest displayed long side / short side (default: "
             f"{recipe.DEFAULT_MAX_ASPECT_RATIO:g}); bounds the cost of the flow: "
             "UnsupportedShape")
    limits.add_argument(
        "--decode-memory-mb", type=positive(int), metavar="MB",
        default=recipe.DEFAULT_DECODE_MEMORY_MB,
        help=f"address-space limit of a child process decoding clips, in MB (default: "
             f"{recipe.DEFAULT_DECODE_MEMORY_MB}): DecodeOutOfMemory")


def add_crops_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--crops`` (``score``; see :mod:`beam_i3d.media.crops`). Imports nothing heavy."""
    from beam_i3d.media import crops

    parser.add_argument(
        "--crops", choices=crops.CROPS, default=crops.DEFAULT_CROPS,
        help="224x224 crops of each resized frame fed to I3D: center (default: one), five "
             "(torchvision FiveCrop order: top-left, top-right, bottom-left, bottom-right, "
             "centre) or ten (the five, then the same five of the mirrored frame; mirrored "
             "flow has its x component negated). Each crop is a network input (ten: 10x "
             "the model work); logits are the mean over crops, and each crop's embedding is "
             "kept (features writes [T, crops, D])")


def add_model_backend_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--model-backend`` and ``--precision`` (``score`` and ``fvd``); see
    :mod:`beam_i3d.job.backends`."""
    from beam_i3d.job import backends

    add = parser.add_argument
    add("--model-backend", choices=backends.BACKENDS, default=backends.DEFAULT_BACKEND,
        help="what runs I3D: tf (TensorFlow, on the GPU if there is one), openvino "
             "(OpenVINO on the CPU, usually faster there) or auto (default: tf where "
             "TensorFlow sees a GPU, openvino elsewhere; chosen on each worker)")
    add("--precision", choices=backends.PRECISIONS, default=backends.DEFAULT_PRECISION,
        help="f32 (default) or bf16: bfloat16 convolutions (openvino, on CPUs with "
             "AVX512_BF16 or AMX only): about 1.6x faster there; logits move by up "
             "to about 0.2 (see the manual's Model backends page)")


def decode_limits_from_args(args: argparse.Namespace) -> recipe.DecodeLimits:
    """The :class:`~beam_i3d.media.recipe.DecodeLimits` that ``args`` (parsed with
    :func:`add_clip_options`) ask for."""
    return recipe.DecodeLimits(
        max_pixels=args.max_pixels,
        max_duration_seconds=args.max_duration,
        decode_timeout_seconds=args.decode_timeout,
        max_aspect_ratio=args.max_aspect_ratio,
        memory_mb=args.decode_memory_mb,
    )
