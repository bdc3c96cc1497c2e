"""Count in, count out: does an output account for every manifest row exactly once?

The job does not trust its runner to have delivered every element (Beam 2.77's
DirectRunner in ``multi_threading`` mode loses some and exits 0). So after every run,
and on demand with ``beam-i3d verify``, the manifests are read again on one machine,
each row is keyed as the pipeline keys it (:mod:`beam_i3d.job.row_keys`), and the keys are
looked up in what the output settles (:mod:`beam_i3d.job.results`): every manifest row must
be settled by exactly one score or error. Rows the output settles more than once (a
runner's retried bundle, an error later scored with ``--retry-errors``) are counted and
collapsed by the read rule; rows of other manifests are counted, not failed.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Sequence, TextIO

from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.results import Settled, settle
from beam_i3d.job.row_keys import keyed_rows, row_key

SHOW_MISSING = 20  # missing rows named in the message


@dataclasses.dataclass(frozen=True, slots=True)  # slots: a Kinetics manifest has 650,000
class ExpectedRow:
    """A manifest row as the output must settle it."""

    row_key: str
    source: str  # file:line, or the file for an unreadable manifest


def manifest_files(pattern: str) -> list[str]:
    """The files a manifest glob matches (local or remote), sorted as the job reads them."""
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_file_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def expected_rows(pattern: str, options: ManifestOptions) -> list[ExpectedRow]:
    """Every row of the manifests ``pattern`` matches, keyed as the pipeline keys it,
    in manifest order (file, line).

    The files are read in that order, so the rows of an identity come in the order
    :func:`row_keys.assign_keys` gives them and each gets its key as it comes; only each
    file's ``(identity, source)`` pairs are held while it is read."""
    repeats: dict[str, int] = {}  # identity -> its rows so far
    out: list[ExpectedRow] = []
    for path in manifest_files(pattern):
        try:
            rows = [(row.identity, row.source)
                    for row in keyed_rows(path, read_file_bytes(path), options)]
        except Exception:  # noqa: BLE001: the job reports such a file as one error row
            out.append(ExpectedRow(f"manifest-file:{path}", path))
            continue
        for identity, source in rows:
            k = repeats.get(identity, 0)
            repeats[identity] = k + 1
            out.append(ExpectedRow(row_key(identity, k), source))
    return out


@dataclasses.dataclass
class Reconciliation:
    """How the output settles the manifest rows (see module doc)."""

    manifest_rows: int
    scored: int
    failed: int
    missing: list[ExpectedRow]
    not_in_manifest: int
    settled: Settled
    skipped: int = 0  # settled before this run (--skip-existing)
    run_scored: int | None = None  # of this run only, when a run is named
    run_failed: int | None = None
    what: str = "manifest rows"  # the units settled: "windows" for a windowed run

    @property
    def ok(self) -> bool:
        return not self.missing and self.scored + self.failed == self.manifest_rows

    def summary_lines(self) -> list[str]:
        s = self.settled
        lines = [f"{self.what}: {self.manifest_rows:,}; settled: {self.scored:,} scored, "
                 f"{self.failed:,} failed; missing: {len(self.missing):,}"]
        if self.run_scored is not None:
            lines.append(f"this run: {self.run_scored:,} scored, {self.run_failed:,} failed; "
                         f"{self.skipped:,} skipped as already settled")
        if s.repeated:
            lines.append(
                f"rows written more than once: {s.repeated:,} ({s.superseded:,} errors "
                f"superseded by a later score, {s.repeated - s.superseded:,} copies from "
                f"retried work), collapsed to one per row; doubled ids: "
                + ", ".join(s.doubled[:SHOW_MISSING])
                + (" ..." if len(s.doubled) > SHOW_MISSING else ""))
        if self.not_in_manifest:
            lines.append(f"rows of other manifests in the output: {self.not_in_manifest:,}")
        if self.missing:
            shown = ", ".join(f"{m.row_key} ({m.source})" for m in self.missing[:SHOW_MISSING])
            more = len(self.missing) - SHOW_MISSING
            lines.append(f"missing rows: {shown}" + (f" and {more:,} more" if more > 0 else ""))
        return lines


def reconcile(expected: Sequence[ExpectedRow], settled: Settled, run_id: str | None = None,
              skipped: int = 0) -> Reconciliation:
    """Match the manifest's rows against what the output settles."""
    scored = failed = 0
    missing = []
    wanted = set()
    for row in expected:
        wanted.add(row.row_key)
        if row.row_key in settled.scores:
            scored += 1
        elif row.row_key in settled.errors:
            failed += 1
        else:
            missing.append(row)
    others = sum(1 for k in settled.scores if k not in wanted) + sum(
        1 for k in settled.errors if k not in wanted)
    result = Reconciliation(len(expected), scored, failed, missing, others, settled,
                            skipped=skipped)
    if run_id is not None:
        result.run_scored, result.run_failed = settled.run_counts(run_id)
    return result


def expected_windows(expected: Sequence[ExpectedRow], plans: dict[str, int]
                     ) -> list[ExpectedRow]:
    """What a windowed run must settle: each window ``R@w<k>`` of every manifest row R
    that was planned (``plans``: row_key -> windows), and, for a row without a plan (its
    video could not be probed, a bad row), the row itself, by one error. A row whose
    plan was lost is thus missing, and so is every lost window."""
    from beam_i3d.job.windows import window_key

    out = []
    for row in expected:
        count = plans.get(row.row_key)
        if count is None:
            out.append(row)
            continue
        out.extend(ExpectedRow(window_key(row.row_key, k), f"{row.source} window {k}")
                   for k in range(count))
    return out


def is_windowed(output: str) -> bool:
    """Whether ``output`` holds a windowed run (plans, or windows)."""
    from beam_i3d import fileio
    from beam_i3d.job.results import list_shards

    return any(list_shards(fileio.join(output, d)) for d in ("plans", "windows"))


def reconcile_output(expected: Sequence[ExpectedRow], output: str, run_id: str | None = None,
                     skipped: int = 0, windowed: bool | None = None) -> Reconciliation:
    """:func:`reconcile` against what ``output`` settles: manifest rows, or, for a
    windowed output, every window of every row (:func:`expected_windows`)."""
    from beam_i3d.job.results import read_plans

    if windowed is None:
        windowed = is_windowed(output)
    if not windowed:
        return reconcile(expected, settle(output), run_id, skipped)
    result = reconcile(expected_windows(expected, read_plans(output)),
                       settle(output, "windows"), run_id, skipped)
    result.what = "windows (and rows without windows)"
    return result


def verify_output(pattern: str, output: str, options: ManifestOptions) -> Reconciliation:
    return reconcile_output(expected_rows(pattern, options), output)


# --- beam-i3d verify -----------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.usage = "beam-i3d verify --manifest GLOB --output DIR [--video-template T] [--ignore-times]"
    add = parser.add_argument
    add("--manifest", required=True, metavar="GLOB",
        help="the manifest(s) the run scored, as given to score (local or gs://)")
    add("--output", required=True, metavar="DIR", help="the run's output directory")
    add("--video-template", metavar="TEMPLATE", help="as given to score")
    add("--ignore-times", action="store_true", help="as given to score")


def manifest_options_of(record, video_template: str | None, ignore_times: bool
                        ) -> ManifestOptions:
    """The manifest options a score output was written with: the record's (DIR/recipe.json)
    where the command line leaves them out; RecipeMismatch where it contradicts it (the
    rows would be keyed otherwise than the run keyed them)."""
    from beam_i3d.errors import RecipeMismatch

    if record is None:
        return ManifestOptions(video_template, ignore_times)
    recorded_template = record.recipe.get("video_template")
    recorded_ignore = bool(record.recipe.get("ignore_times"))
    conflicts = []
    if video_template is not None and video_template != recorded_template:
        conflicts.append(f"--video-template {video_template!r} (recorded: "
                         f"{recorded_template!r})")
    if ignore_times and not recorded_ignore:
        conflicts.append("--ignore-times (the run scored the manifest's times)")
    if conflicts:
        raise RecipeMismatch("the options contradict the output's recorded recipe: "
                             + "; ".join(conflicts) + "; leave them out to use the record's")
    return ManifestOptions(recorded_template, recorded_ignore)


def run(args, extra_args, stream: TextIO | None = None) -> int:
    from beam_i3d.cli import EXIT_OK, EXIT_RECONCILIATION
    from beam_i3d.errors import RecipeMismatch
    from beam_i3d.job import output_record

    stream = stream or sys.stdout
    output = args.output.rstrip("/") or "/"
    record = output_record.read_record(output)
    if record is not None and record.command != "score":
        raise RecipeMismatch(f"{output} is a `beam-i3d {record.command}` output "
                             f"({output_record.RECORD_NAME}); verify checks score outputs")
    options = manifest_options_of(record, args.video_template, args.ignore_times)
    windowed = record.recipe.get("layout") == "windows" if record is not None else None
    result = reconcile_output(expected_rows(args.manifest, options), output,
                              windowed=windowed)
    off = output_record.shards_off_recipe(output, record,
                                          output_record.score_recipe_from_metadata,
                                          known=result.settled.metadata)
    for line in result.summary_lines():
        print(line, file=stream)
    for line in off_recipe_lines(off, record):
        print(line, file=stream)
    if result.ok and not off:
        print(f"verify: OK: every manifest row is settled exactly once in {args.output}",
              file=stream)
        return EXIT_OK
    if off:
        print(f"verify: FAILED: {len(off):,} shard(s) in {args.output} were not written "
              "under the output's recipe: their numbers do not belong with the others",
              file=stream)
    if not result.ok:
        scores = "windows" if result.what != "manifest rows" else "scores"
        print(f"verify: FAILED: {len(result.missing):,} of {result.manifest_rows:,} "
              f"{result.what} are in neither {args.output}/{scores} nor "
              f"{args.output}/errors", file=stream)
    return EXIT_RECONCILIATION


def off_recipe_lines(off, record) -> list[str]:
    """One line per shard not written under the output's recipe (the first
    SHOW_MISSING), naming what differs."""
    against = "the recorded recipe" if record is not None else "the first shard's recipe"
    lines = [f"shard not written under {against}: {path} ({'; '.join(diffs)})"
             for path, diffs in off[:SHOW_MISSING]]
    if len(off) > SHOW_MISSING:
        lines.append(f"... and {len(off) - SHOW_MISSING:,} more such shards")
    return lines
