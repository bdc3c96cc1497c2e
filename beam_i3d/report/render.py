"""The report's text summary and its self-contained HTML page (from the summary dict).

The HTML has inline CSS and the charts as base64 ``data:`` URIs: no scripts, no
external URLs, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json

from beam_i3d.report.charts import CHARTS
from beam_i3d.report.timelines import clock

METADATA_ORDER = ("version", "schema_version", "streams", "rgb_checkpoint", "flow_checkpoint",
                  "label_map", "num_classes", "recipe")


def percent(value: float | None) -> str:
    """0.7123 -> '71.23%'; None -> 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _of(correct: int | None, total: int) -> str:
    return "" if correct is None else f" ({correct:,} of {total:,})"


def ordered_metadata(metadata: dict[str, str]) -> list[tuple[str, str]]:
    """Run metadata, the well-known keys first."""
    known = [(k, metadata[k]) for k in METADATA_ORDER if k in metadata]
    return known + sorted((k, v) for k, v in metadata.items() if k not in METADATA_ORDER)


def windows_line(summary: dict) -> str:
    """A windowed run's outcome: windows scored of those planned, and what failed."""
    w = summary["windows"]
    return (f"windows: {w['scored']:,} scored of {w['planned']:,} planned over "
            f"{w['rows_planned']:,} manifest row(s); failures: {w['window_failures']:,} "
            f"window(s), {w['row_failures']:,} manifest row(s)")


def outcome_lines(summary: dict) -> list[str]:
    """Clips (windows) scored and failed, and the failures by stage and by type."""
    scored, failed = summary["scores"]["clips"], summary["errors"]["failures"]
    total = scored + failed
    if "windows" in summary:
        lines = [windows_line(summary)]
    else:
        lines = [f"clips: {scored:,} scored, {failed:,} failed"
                 + (f" ({percent(failed / total)} of {total:,} failed)" if total else "")]
    if failed:
        lines.append("failures by stage: " + ", ".join(
            f"{stage} {n:,}" for stage, n in summary["errors"]["by_stage"].items()))
        lines.append("failures by type: " + ", ".join(
            f"{r['error_type']} ({r['stage']}) {r['count']:,}"
            for r in summary["errors"]["by_error_type"]))
    return lines


def accuracy_lines(summary: dict) -> list[str]:
    """Labelled clips and the accuracies (or why there are none)."""
    s = summary["scores"]
    acc = s["accuracy"]
    if not s["clips"]:
        return ["accuracy: no clips were scored"]
    if not s["labelled"]:
        return [f"labels: none of the {s['clips']:,} scored clips has a label; "
                "no accuracy to report"]
    top5 = (f"{percent(acc['top5'])}{_of(acc['top5_correct'], s['labelled'])}"
            if acc["top5"] is not None else acc["top5_note"])
    return [
        f"labels: {s['labelled']:,} of {s['clips']:,} scored clips have one "
        f"({s['unlabelled']:,} without)",
        f"top-1 accuracy: {percent(acc['top1'])}{_of(acc['top1_correct'], s['labelled'])}",
        f"top-5 accuracy: {top5}",
        f"mean per-class top-1 accuracy: {percent(acc['mean_per_class_top1'])} over "
        f"{acc['classes_in_ground_truth']:,} classes in the ground truth",
    ]


def text_summary(summary: dict) -> str:
    """The short plain-text summary the command prints."""
    s = summary["scores"]
    meta = summary["metadata"]
    lines = [f"beam-i3d report for {summary['run_dir']}"]
    run = [f"{k} {meta[k]}" for k in ("version", "streams", "label_map") if k in meta]
    if run:
        lines.append("run: " + ", ".join(run))
    lines += outcome_lines(summary)
    if "windows" in summary:  # no clips: the windows are in the timelines (and windows/)
        lines += [f"warning: {w}" for w in summary["warnings"]]
        return "\n".join(lines)
    lines += accuracy_lines(summary)
    if s["most_confused"]:
        lines.append("most confused (true -> predicted): " + ", ".join(
            f"{p['true']} -> {p['predicted']} ({p['count']:,})" for p in s["most_confused"][:3]))
    if s["most_predicted"]:
        lines.append(f"most predicted ({s['distinct_predicted_classes']:,} classes predicted): "
                     + ", ".join(f"{r['label']} ({percent(r['share'])})"
                                 for r in s["most_predicted"][:3]))
    if s["clips"]:
        prob = s["top1_probability"]
        low, high = prob["median_bin"]
        line = f"top-1 probability: median in [{low:.2f}, {high:.2f})"
        if s["calibration"]["ece"] is not None:
            line += f", expected calibration error {s['calibration']['ece']:.3f}"
        lines.append(line)
        f = s["num_frames"]
        lines.append(f"num_frames: min {f['min']:,}, median {f['median']:,}, "
                     f"mean {f['mean']:,.1f}, max {f['max']:,}")
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#222;margin:24px auto;max-width:1100px;padding:0 16px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.sub{color:#666}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:140px;background:#f8f9fb}
.card b{display:block;font-size:22px}.card span{color:#555;font-size:12px}
.warn{background:#fff4e5;border:1px solid #f0b35a;border-radius:6px;padding:6px 14px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border-bottom:1px solid #e4e4e4;
 padding:3px 10px;text-align:left;vertical-align:top}th{background:#f3f4f6}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-height:480px;overflow:auto;border:1px solid #e4e4e4;display:inline-block}
img{max-width:100%;height:auto;display:block;margin:8px 0}
pre{background:#f6f8fa;padding:8px;border-radius:4px;white-space:pre-wrap;margin:0}
code{font-size:12px}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, charts: dict[str, bytes], alt: str | None = None) -> str:
    if name not in charts:
        return ""
    data = base64.b64encode(charts[name]).decode("ascii")
    return (f'<img id="chart-{name}" alt="{_e(alt or CHARTS[name][0])}" '
            f'src="data:image/png;base64,{data}">')


def _card(value: str, caption: str) -> str:
    return f"<div class=card><b>{_e(value)}</b><span>{_e(caption)}</span></div>"


def _failures_section(summary: dict, charts: dict[str, bytes]) -> str:
    e = summary["errors"]
    parts = ["<h2>Failures</h2>"]
    if not e["failures"]:
        parts.append(f"<p>No failures ({e['files']} part file(s) in errors/).</p>")
        return "".join(parts)
    parts.append(_img("failures", charts))
    parts.append("<h3>By stage</h3>" + _table(
        ["stage", "clips"], [[s, f"{n:,}"] for s, n in e["by_stage"].items()], {1}))
    rows = [[r["error_type"], r["stage"], f"{r['count']:,}",
             "\n".join((f"{x['clip_id']}: " if x["clip_id"] else "") + x["message"]
                       for x in r["examples"])]
            for r in e["by_error_type"]]
    table = _table(["error type", "stage", "clips", "example messages"], rows, {2})
    parts.append("<h3>By error type</h3>" + table.replace("\n", "<br>"))
    return "".join(parts)


def _accuracy_section(summary: dict, charts: dict[str, bytes]) -> str:
    s = summary["scores"]
    acc = s["accuracy"]
    parts = ["<h2>Accuracy</h2>"]
    parts += [f"<p>{_e(line)}</p>" for line in accuracy_lines(summary)]
    if not s["labelled"]:
        return "".join(parts)
    parts.append(_img("per_class_accuracy", charts))
    parts.append(f"<h3>The {len(s['most_confused'])} most confused pairs</h3>")
    if s["most_confused"]:
        parts.append(_img("confused_pairs", charts))
        parts.append(_table(
            ["true label", "predicted label", "clips", "share of the true class"],
            [[p["true"], p["predicted"], f"{p['count']:,}", percent(p["share"])]
             for p in s["most_confused"]], {2, 3}))
    else:
        parts.append("<p>No labelled clip was predicted as another class.</p>")
    parts.append(f"<h3>Per class ({acc['classes_in_ground_truth']:,} classes in the ground "
                 "truth, worst top-1 first)</h3>")
    rows = [[c["label"], f"{c['support']:,}", percent(c["top1"]), percent(c["top5"]),
             "" if c["most_predicted_instead"] is None else
             f"{c['most_predicted_instead']} ({c['most_predicted_instead_count']:,})"]
            for c in s["per_class"]]
    parts.append('<div class="scroll">' + _table(
        ["label", "support", "top-1", "top-5", "most often predicted instead"], rows, {1, 2, 3})
        + "</div>")
    return "".join(parts)


def _predictions_section(summary: dict, charts: dict[str, bytes]) -> str:
    s = summary["scores"]
    parts = ["<h2>Predictions</h2>"]
    if not s["clips"]:
        return "".join(parts) + "<p>No clips were scored.</p>"
    parts.append(f"<p>{s['distinct_predicted_classes']:,} distinct classes predicted over "
                 f"{s['clips']:,} clips.</p>")
    parts.append(_img("predicted_classes", charts))
    parts.append("<h3>Top-1 probability</h3>")
    low, high = s["top1_probability"]["median_bin"]
    ece = s["calibration"]["ece"]
    parts.append(f"<p>The median clip's top-1 probability lies in [{low:.2f}, {high:.2f}). "
                 + (f"Expected calibration error over labelled clips (20 equal-width bins): "
                    f"{ece:.3f}.</p>" if ece is not None else
                    "No labels: calibration cannot be shown.</p>"))
    parts.append(_img("top1_probability", charts))
    parts.append(_img("calibration", charts))
    f = s["num_frames"]
    parts.append("<h3>num_frames</h3>")
    parts.append(_table(["min", "5th pct", "median", "mean", "95th pct", "max"],
                        [[f"{f['min']:,}", f"{f['p5']:,}", f"{f['median']:,}",
                          f"{f['mean']:,.1f}", f"{f['p95']:,}", f"{f['max']:,}"]],
                        set(range(6))))
    parts.append(_img("num_frames", charts))
    return "".join(parts)


def _timelines_section(summary: dict, charts: dict[str, bytes]) -> str:
    t = summary["timelines"]
    parts = ["<h2 id=timelines>Timelines</h2>",
             f"<p>{t['videos']:,} video(s) have a timeline; shown: {_e(t['chosen_by'])} "
             "(<code>beam-i3d report DIR --video CLIP</code> shows another). Each window is "
             "scored as a clip; a segment is a run of windows with the same top-1 label.</p>"]
    for entry in t["shown"]:
        parts.append(f"<h3>{_e(entry['clip_id'])}</h3>")
        parts.append(f"<p class=sub>{_e(entry['video_uri'])} &middot; "
                     f"{_e(clock(entry['start_sec']))}&ndash;{_e(clock(entry['end_sec']))} "
                     f"&middot; {entry['windows_scored']:,} of {entry['num_windows']:,} "
                     f"windows scored &middot; {len(entry['segments']):,} segment(s)"
                     + (f" &middot; {_e(entry['layout'])}" if entry.get("layout") else "")
                     + (f" &middot; manifest label {_e(entry['label'])}" if entry["label"]
                        else "") + "</p>")
        name = entry["chart"][:-len(".png")]
        parts.append(_img(name, charts, f"Timeline of {entry['clip_id']}"))
        rows = [[clock(s["start_sec"]), clock(s["end_sec"]), s["label"],
                 f"{s['mean_probability']:.2f}", f"{s['num_windows']:,}",
                 f"{s['first_window']}\u2013{s['last_window']}"] for s in entry["segments"]]
        parts.append('<div class="scroll">' + _table(
            ["start", "end", "top-1 label", "mean p", "windows", "window indices"], rows,
            {0, 1, 3, 4}) + "</div>")
    return "".join(parts)


def _metadata_section(summary: dict) -> str:
    parts = ["<h2>Run metadata</h2>"]
    meta = summary["metadata"]
    if not meta:
        return "".join(parts) + "<p>The Parquet files carry no beam-i3d run metadata.</p>"
    rows = []
    for key, value in ordered_metadata(meta):
        try:
            shown = json.dumps(json.loads(value), indent=2) if key == "recipe" else value
        except ValueError:
            shown = value
        rows.append(f"<tr><th>{_e(key)}</th><td><pre><code>{_e(shown)}</code></pre></td></tr>")
    parts.append("<p class=sub>From the first part file.</p><table>" + "".join(rows)
                 + "</table>")
    for d in summary["metadata_disagreements"]:
        parts.append(f"<p class=warn>Part files disagree on <b>{_e(d['key'])}</b>:</p>")
        parts.append(_table(["value", "files"], [
            [v["value"], "\n".join(v["files"])] for v in d["values"]]).replace("\n", "<br>"))
    return "".join(parts)


def html_report(summary: dict, charts: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page."""
    s, e = summary["scores"], summary["errors"]
    acc = s["accuracy"]
    total = s["clips"] + e["failures"]
    timelines = _timelines_section(summary, charts) if "timelines" in summary else ""
    if "windows" in summary:  # a windowed run: its windows are not clips
        w = summary["windows"]
        cards = [_card(f"{w['scored']:,}", f"windows scored of {w['planned']:,} planned"),
                 _card(f"{w['rows_planned']:,}", "manifest rows planned"),
                 _card(f"{summary.get('timelines', {}).get('videos', 0):,}",
                       "videos with a timeline"),
                 _card(f"{e['failures']:,}", f"failures ({w['window_failures']:,} windows, "
                                             f"{w['row_failures']:,} rows)")]
        body = [timelines, _failures_section(summary, charts)]
    else:
        cards = [_card(f"{s['clips']:,}", "clips scored"),
                 _card(f"{e['failures']:,}", "clips failed"
                       + (f" ({percent(e['failures'] / total)})" if total else "")),
                 _card(f"{s['labelled']:,}", "scored clips with a label")]
        if s["labelled"]:
            cards += [_card(percent(acc["top1"]), "top-1 accuracy"),
                      _card(percent(acc["top5"]), "top-5 accuracy"),
                      _card(percent(acc["mean_per_class_top1"]), "mean per-class top-1")]
        body = [_failures_section(summary, charts), _accuracy_section(summary, charts),
                _predictions_section(summary, charts), timelines]
    warnings = "".join(f"<p class=warn>{_e(w)}</p>" for w in summary["warnings"])
    return "".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>beam-i3d report: {_e(summary['run_dir'])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>beam-i3d report</h1>",
        f"<p class=sub>{_e(summary['run_dir'])} &middot; generated {_e(summary['generated_at'])} "
        f"by beam-i3d {_e(summary['report_version'])}</p>",
        warnings,
        '<div class="cards">', *cards, "</div>",
        *body,
        _metadata_section(summary),
        "</body></html>\n",
    ])
