"""``beam-i3d report DIR``: what happened in a run, without writing queries.

Reads ``DIR/scores`` and ``DIR/errors`` (local or gs://), prints a short text summary and
writes into ``--out`` (default ``DIR/report`` for a local DIR, ``./report`` for a remote
one): ``report.html`` (self-contained, charts embedded), one PNG per chart and
``summary.json`` with every figure. Reads only the columns it needs (never logits or
embeddings) in record batches, so memory does not grow with the number of rows.

A windowed run (``score --window``) is reported in windows: for its longest videos (or
the one ``--video`` names) the segments as text, and in the HTML a Timelines section with
a timeline chart per video (``timeline_<n>_<clip_id>.png``) and its segment table.

Modules: :mod:`.metrics` (the figures, pure), :mod:`.reader` (I/O), :mod:`.charts`
(matplotlib, Agg), :mod:`.render` (text and HTML), :mod:`.timelines` (windowed runs),
:mod:`.build` (ties them together).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR",
                        help="output directory of a run (holding scores/ and errors/), "
                             "local or gs://")
    parser.add_argument("--out", metavar="REPORT_DIR",
                        help="where to write report.html, the chart PNGs and summary.json, "
                             "local or gs:// (default: DIR/report for a local DIR, "
                             "./report for a remote one)")
    parser.add_argument("--video", metavar="CLIP",
                        help="windowed runs: show the timeline of this video (clip_id, "
                             "row_key or video URI) instead of the longest ones")


def run(args: argparse.Namespace, extra_args: list[str]) -> int:
    from beam_i3d.report.build import build_report
    from beam_i3d.report.render import text_summary
    from beam_i3d.report.timelines import timeline_text

    summary = build_report(args.dir, args.out, video=args.video)
    print(text_summary(summary))
    if "timelines" in summary:
        print(timeline_text(summary["timelines"]["shown"]))
    print(f"report: {summary['report_html']} ({len(summary['charts'])} charts; "
          f"all figures in summary.json)")
    return 0
