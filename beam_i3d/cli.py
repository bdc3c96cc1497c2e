"""The ``beam-i3d`` command (also ``python -m beam_i3d``).

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args, extra_args) -> int`` and keeps heavy imports (TensorFlow, Beam) inside
``run`` so that ``--help`` is quick. ``extra_args`` are the arguments the subcommand's
parser did not recognise; only ``score`` accepts them (they are Beam pipeline options).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from beam_i3d import __version__

# Exit statuses of every subcommand (README "Exit codes").
EXIT_OK = 0             # done; for score: every row settled, error rate within bounds
EXIT_FAILURE = 1        # the command failed (bad input for preprocess/export, a crash)
EXIT_USAGE = 2          # bad or unknown options
EXIT_CONFIGURATION = 3  # cannot start as asked: manifests, output, checkpoints, storage
EXIT_RECONCILIATION = 4  # outputs do not account for every manifest row exactly once
EXIT_ERROR_RATE = 5     # too many rows failed (--max-error-rate; all failed, none scored)

# name -> (module, one-line help, accepts unknown arguments)
SUBCOMMANDS = {
    "score": ("beam_i3d.score_cli", "score clips from manifests with I3D (a Beam job)", True),
    "preprocess": ("beam_i3d.preprocess_cli",
                   "decode one video into the model's inputs, as the release's .npy files", False),
    "export": ("model.export_cli", "write the I3D model as a TensorFlow SavedModel", False),
    "report": ("beam_i3d.report", "summarise a run's scores and errors as text, HTML and "
               "PNG charts", False),
    "verify": ("beam_i3d.verify", "check that a run's output settles every manifest row "
               "exactly once", False),
}


def streams_argument(text: str) -> tuple[str, ...]:
    """``--streams`` of the subcommands: ``rgb``, ``flow`` or ``rgb,flow`` (either order)
    -> the streams in canonical order."""
    from beam_i3d.recipe import STREAMS

    streams = tuple(s.strip() for s in text.split(",") if s.strip())
    if not streams or set(streams) - set(STREAMS) or len(set(streams)) != len(streams):
        raise argparse.ArgumentTypeError(f"expected rgb, flow or rgb,flow; got {text!r}")
    return tuple(s for s in STREAMS if s in streams)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beam-i3d",
        description="Score videos with DeepMind's I3D (Kinetics) on Apache Beam.")
    parser.add_argument("--version", action="version", version=f"beam-i3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    module, _, accepts_extra = SUBCOMMANDS[args.command]
    if extra and not accepts_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from beam_i3d.errors import BeamI3DError, ConfigurationError, ReconciliationError

    try:
        return importlib.import_module(module).run(args, extra)
    except BeamI3DError as e:
        print(f"beam-i3d {args.command}: error: {e}", file=sys.stderr)
        if isinstance(e, ConfigurationError):
            return EXIT_CONFIGURATION
        if isinstance(e, ReconciliationError):
            return EXIT_RECONCILIATION
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
