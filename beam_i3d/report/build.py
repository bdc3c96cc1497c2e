"""``build_report``: read a run's outputs, compute the figures, write the report files."""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Sequence

from beam_i3d import __version__, fileio
from beam_i3d.errors import OutputError, ReportError
from beam_i3d.report import reader
from beam_i3d.report.charts import draw_charts, draw_timeline_charts
from beam_i3d.report.metrics import ErrorCounts, ScoreCounts, Vocabulary
from beam_i3d.report.render import html_report
from beam_i3d.report.timelines import timelines_summary
from beam_i3d.job.results import read_plans, settle
from beam_i3d.job.windows import parse_window_key
from model.labels import label_map


def default_out_dir(run_dir: str) -> str:
    """``DIR/report`` for a local run; ``./report`` (local) for a remote one."""
    if fileio.is_local(run_dir):
        return os.path.join(fileio.local_path(run_dir), "report")
    return "report"


# Metadata that names the run which wrote a file: files of several runs in one output
# are normal (a resumed run writes beside the earlier ones), so these never disagree.
# The recipe (output_recipe) is checked apart, against the output's record, naming
# what differs (recipe_warnings).
PER_RUN_KEYS = frozenset({"run_id", "output_recipe"})


def compare_metadata(per_file: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[dict]]:
    """The first file's metadata, and for every key on which the files disagree the
    values with the files holding each (a key a file lacks counts as value None);
    :data:`PER_RUN_KEYS` are not compared."""
    if not per_file:
        return {}, []
    paths = sorted(per_file)
    first = per_file[paths[0]]
    keys = sorted(set().union(*per_file.values()) - PER_RUN_KEYS)
    disagreements = []
    for key in keys:
        holders: dict[str | None, list[str]] = {}
        for path in paths:
            holders.setdefault(per_file[path].get(key), []).append(path)
        if len(holders) > 1:
            disagreements.append({"key": key, "values": [
                {"value": value, "files": files} for value, files in holders.items()]})
    return first, disagreements


def label_map_sizes(per_file: dict[str, dict[str, str]]) -> list[int]:
    """Class counts named by the files' ``label_map`` (``kinetics-N``) or ``num_classes``."""
    sizes = set()
    for meta in per_file.values():
        match = re.fullmatch(r"kinetics-(\d+)", meta.get("label_map", ""))
        if match:
            sizes.add(int(match.group(1)))
        elif meta.get("num_classes", "").isdigit():
            sizes.add(int(meta["num_classes"]))
    return sorted(sizes)


def known_label_names(sizes: Sequence[int]) -> tuple[list[str], list[str]]:
    """The union of the label maps of ``sizes`` in order, and warnings for unknown sizes."""
    names, warnings = [], []
    for size in sizes:
        try:
            names.extend(label_map(size))
        except ValueError as e:
            warnings.append(f"run metadata names a label map this version does not ship: {e}")
    return list(dict.fromkeys(names)), warnings


def _write(out_dir: str, name: str, data: bytes) -> str:
    path = fileio.join(out_dir, name)
    if fileio.is_local(out_dir):
        os.makedirs(fileio.local_path(out_dir), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    else:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as f:
            f.write(data)
    return path


def recipe_warnings(run_dir: str, per_file: dict[str, dict[str, str]]) -> list[str]:
    """One warning per shard not written under the output's recorded recipe
    (:mod:`beam_i3d.job.output_record`), naming what differs; the first 20."""
    from beam_i3d.job import output_record

    record = output_record.read_record(run_dir)
    if record is not None and record.command != "score":
        raise ReportError(f"{run_dir} is a `beam-i3d {record.command}` output; report "
                          "summarises score outputs")
    off = output_record.off_recipe(per_file, record,
                                   output_record.score_recipe_from_metadata)
    against = "the recorded recipe" if record else "the first shard's recipe"
    out = [f"{path} was not written under {against} ({'; '.join(diffs)}): its rows do "
           "not belong with the others" for path, diffs in off[:20]]
    if len(off) > 20:
        out.append(f"... and {len(off) - 20:,} more shards not written under {against}")
    return out


def compute_summary(run_dir: str, video: str | None = None) -> dict:
    """All the report's figures for the run in ``run_dir`` (see :mod:`metrics`).

    A windowed run (``score --window``: ``windows/`` or ``plans/``, no scores) is counted
    in windows (``summary["windows"]``) and its timelines are shown (``timelines``: the
    longest videos, or ``video``); scores figures are then empty, as it has no clips."""
    run_dir = run_dir.rstrip("/") or "/"
    if not reader.directory_exists(run_dir):
        raise ReportError(f"{run_dir} does not exist")
    scores_files = reader.part_files(fileio.join(run_dir, "scores"))
    errors_files = reader.part_files(fileio.join(run_dir, "errors"))
    windows_files = reader.part_files(fileio.join(run_dir, "windows"))
    windowed = not scores_files and (
        windows_files is not None or reader.part_files(fileio.join(run_dir, "plans")) is not None)
    if scores_files is None and errors_files is None and not windowed:
        raise ReportError(f"{run_dir} has neither scores/ nor errors/: is it the output "
                          "directory of a beam-i3d run?")
    # A run writes a kind's directory with its first row: no errors/ means none failed
    # (no scores/, none scored; the summary says so), nothing to warn about.
    warnings: list[str] = []
    scores_files, errors_files = scores_files or [], errors_files or []
    windows_files = (windows_files or []) if windowed else []
    timelines = timelines_summary(run_dir, video)  # first: an unknown --video fails early

    per_file = {path: reader.file_metadata(path)
                for path in scores_files + windows_files + errors_files}
    metadata, disagreements = compare_metadata(per_file)
    # Files of several runs (a resumed output) differ in run_id, which is not compared;
    # every shard's recipe is checked against the output's record.
    for d in disagreements:
        shown = "; ".join(f"{v['value']!r} in {len(v['files'])} file(s)" for v in d["values"])
        warnings.append(f"part files disagree on run metadata {d['key']}: {shown}")
    warnings += recipe_warnings(run_dir, per_file)
    sizes = label_map_sizes(per_file)
    names, label_warnings = known_label_names(sizes)
    warnings += label_warnings
    if not names and (scores_files or windows_files):
        warnings.append("the run metadata names no label map; labels are not checked "
                        "against one")

    # One row per manifest row: shards written twice by retried work, and errors that a
    # later run scored, are left out (beam_i3d.job.results).
    try:
        settled = settle(run_dir, "windows" if windowed else "scores")
    except OutputError as e:
        raise ReportError(str(e)) from e
    if settled.repeated:
        warnings.append(f"{settled.repeated:,} row(s) appear more than once in the shards "
                        "(retried work or retried errors); each is counted once")
    scores = ScoreCounts(Vocabulary(names))
    for batch in reader.iter_batches(scores_files, reader.SCORES_COLUMNS,
                                     None if windowed else settled.keep):
        scores.add(batch["label"], batch["predicted_label"], batch["top_k"],
                   batch["predicted_probability"], batch["num_frames"])
    errors = ErrorCounts()
    for batch in reader.iter_batches(errors_files, reader.ERRORS_COLUMNS, settled.keep):
        errors.add(batch["stage"], batch["error_type"], batch["message"], batch["clip_id"])

    scores_summary = {"files": len(scores_files), **scores.summary()}
    errors_summary = {"files": len(errors_files), **errors.summary()}
    unknown = scores_summary["labels_outside_label_map"]
    if unknown:
        warnings.append(
            f"{sum(u['clips'] for u in unknown):,} labelled clip(s) have labels that are not in "
            f"the label map, counted as wrong: "
            + ", ".join(f"{u['label']!r} ({u['clips']})" for u in unknown))
    if scores_summary["predictions_outside_label_map"]:
        warnings.append("predicted labels not in the label map: "
                        + ", ".join(map(repr, scores_summary["predictions_outside_label_map"])))
    note = scores_summary["accuracy"]["top5_note"]
    if note and scores_summary["labelled"]:
        warnings.append(f"top-5 accuracy {note}")
    summary = {
        "run_dir": run_dir,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "report_version": __version__,
        "metadata": metadata,
        "metadata_disagreements": disagreements,
        "label_map": {"classes": sizes, "names_known": len(names)},
        "scores": scores_summary,
        "errors": errors_summary,
        "warnings": warnings,
    }
    if windowed:
        planned = read_plans(run_dir)
        window_failures = sum(parse_window_key(key) is not None for key in settled.errors)
        summary["windows"] = {
            "files": len(windows_files), "scored": len(settled.scores),
            "planned": sum(planned.values()), "rows_planned": len(planned),
            "window_failures": window_failures,
            "row_failures": len(settled.errors) - window_failures}
    if timelines is not None:
        summary["timelines"] = timelines
    return summary


def build_report(run_dir: str, out_dir: str | None = None, video: str | None = None) -> dict:
    """Write ``report.html``, one PNG per chart and ``summary.json`` for the run in
    ``run_dir`` (local or a Beam FileSystems URI) into ``out_dir`` (default
    :func:`default_out_dir`); return the summary, with ``out_dir``, ``files`` (all paths
    written) and ``report_html`` (the page's path) added. A windowed run's page has a
    timeline chart per shown video (the longest, or ``video``)."""
    summary = compute_summary(run_dir, video)
    out_dir = out_dir or default_out_dir(run_dir)
    charts = {**draw_timeline_charts(summary), **draw_charts(summary)}
    summary["charts"] = [f"{name}.png" for name in charts]
    summary["out_dir"] = out_dir
    files = [_write(out_dir, f"{name}.png", png) for name, png in charts.items()]
    page = _write(out_dir, "report.html", html_report(summary, charts).encode("utf-8"))
    files.append(page)
    files.append(_write(out_dir, "summary.json",
                        json.dumps(summary, indent=1, ensure_ascii=False).encode("utf-8")))
    summary["files"] = files
    summary["report_html"] = page
    return summary

