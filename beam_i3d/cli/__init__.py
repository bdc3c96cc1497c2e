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

# Exit statuses of every subcommand (docs/commands/index.md, "Exit codes").
EXIT_OK = 0             # done; for score: every row settled, error rate within bounds
EXIT_FAILURE = 1        # the command failed (bad input for preprocess/export, a crash)
EXIT_USAGE = 2          # bad or unknown options
EXIT_CONFIGURATION = 3  # cannot start as asked: manifests, output, checkpoints, storage
EXIT_RECONCILIATION = 4  # outputs do not account for every manifest row exactly once
EXIT_ERROR_RATE = 5     # too many rows failed (--max-error-rate; all failed, none scored)
EXIT_INTERRUPTED = 130  # Ctrl-C (score: a remote job is left running, and says so)

# name -> (module, one-line help, accepts unknown arguments)
SUBCOMMANDS = {
    "score": ("beam_i3d.cli.score", "score clips from manifests with I3D (a Beam job)", True),
    "preprocess": ("beam_i3d.cli.preprocess",
                   "decode one video into the model's inputs, as the release's .npy files", False),
    "export": ("beam_i3d.cli.export", "write the I3D model as a TensorFlow SavedModel", False),
    "report": ("beam_i3d.report", "summarise a run's scores and errors as text, HTML and "
               "PNG charts", False),
    "fvd": ("beam_i3d.fvd.command", "the Frechet Video Distance of two video sets, with "
            "reusable statistics (a Beam job)", True),
    "features": ("beam_i3d.features.command", "write a score run's embeddings as one "
                 "array file per video (.npy, .npz, .h5) with an index (a Beam job)", True),
    "verify": ("beam_i3d.job.verify", "check that a run's output settles every manifest row "
               "exactly once", False),
}


def streams_argument(text: str) -> tuple[str, ...]:
    """``--streams`` of the subcommands: ``rgb``, ``flow`` or ``rgb,flow`` (either order)
    -> the streams in canonical order."""
    from beam_i3d.media.recipe import STREAMS

    streams = tuple(s.strip() for s in text.split(",") if s.strip())
    if not streams or set(streams) - set(STREAMS) or len(set(streams)) != len(streams):
        raise argparse.ArgumentTypeError(f"expected rgb, flow or rgb,flow; got {text!r}")
    return tuple(s for s in STREAMS if s in streams)


class UsageExit(SystemExit):
    """A usage error found after parsing: prints ``message`` (one line) to stderr and
    exits with status 2; ``str()`` is the message."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message
        print(message, file=sys.stderr)

    def __str__(self):
        return self.message


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``beam-i3d score: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


VERBOSE_HELP = ("show TensorFlow's native start-up log lines (CUDA, oneDNN, CPU "
                "features), hidden by default")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="beam-i3d", allow_abbrev=False,
        description="Score videos with DeepMind's I3D (Kinetics) on Apache Beam.")
    parser.add_argument("--version", action="version", version=f"beam-i3d {__version__}")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.subcommand_parsers = {}
    for name, (module, help_text, _) in SUBCOMMANDS.items():
        # No abbreviations: --top would otherwise be taken for --top-k, silently.
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        importlib.import_module(module).add_arguments(p)
        # SUPPRESS: `beam-i3d --verbose score` is not reset by the subcommand's default.
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=VERBOSE_HELP)
        parser.subcommand_parsers[name] = p
    return parser


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """The long option strings of ``parser`` (not --help)."""
    return [o for a in parser._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"]


def beam_option_parser() -> argparse.ArgumentParser:
    """A parser of every Beam pipeline option, built as Beam builds its own
    (``PipelineOptions.get_all_options``: each direct subclass's ``_add_argparse_args``,
    no abbreviations); its errors raise ``ValueError``."""
    from apache_beam.options import pipeline_options as po

    class BeamOptions(po._BeamArgumentParser):  # pylint: disable=protected-access
        def error(self, message):
            raise ValueError(message)

    parser = BeamOptions(allow_abbrev=False, add_help=False, prog="beam-i3d score")
    classes = {}
    for cls in po.PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def closest_option(name: str, candidates: list[str]) -> str | None:
    """The candidate most like ``name`` (difflib; ``_`` and ``-`` alike), or None.
    On a tie the earlier candidate wins (ours are listed before Beam's)."""
    import difflib

    def norm(option):
        return option.lstrip("-").lower().replace("_", "-")

    target = norm(name)
    best, best_ratio = None, 0.0
    for candidate in candidates:
        ratio = difflib.SequenceMatcher(None, target, norm(candidate)).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best if best_ratio >= 0.6 else None


def unknown_argument_error(extra: list[str], ours: list[str],
                           beam: argparse.ArgumentParser | None = None) -> str | None:
    """What is wrong with the arguments our parser left over (``extra``), or None.
    With ``beam``, arguments Beam's pipeline options take are fine (``--opt value``,
    ``--opt=value``, flags); the first other one is named, with the closest option of
    ours or Beam's."""
    leftover = list(extra)
    candidates = list(ours)
    if beam is not None:
        candidates += option_names(beam)
        try:
            _, leftover = beam.parse_known_args(extra)
        except ValueError as e:
            return f"{e}"
    if not leftover:
        return None
    first = leftover[0]
    if first == "--":
        return "unexpected argument --"
    if not first.startswith("-"):
        return f"unexpected argument {first!r}"
    name = first.split("=", 1)[0]
    suggestion = closest_option(name, candidates)
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    return f"unknown option {name}{hint}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    module, _, accepts_extra = SUBCOMMANDS[args.command]
    sub_parser = parser.subcommand_parsers[args.command]
    if extra:
        problem = unknown_argument_error(
            extra, option_names(sub_parser), beam_option_parser() if accepts_extra else None)
        if problem:
            sub_parser.error(problem)
    if not getattr(args, "verbose", False):
        from beam_i3d.cli.quiet import quiet_native_logs

        quiet_native_logs()
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


def console_main() -> None:
    """The ``beam-i3d`` command: :func:`main`, then exit with its status without
    Python's interpreter teardown. Once a local Beam job has run, native threads that
    Beam's gRPC services and TensorFlow leave behind can abort the process while the
    interpreter shuts down ("terminate called without an active exception", SIGABRT),
    after every output was written and checked; the status of the run must be ours."""
    import os

    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
