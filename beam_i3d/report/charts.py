"""The report's charts, drawn with matplotlib's Agg backend (headless) into PNG bytes.

Each chart is drawn from the report's summary dict only; a chart whose data is empty
(no failures, no labels...) is not drawn, and the report says why instead.
"""

from __future__ import annotations

import io
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless, whatever the user's matplotlibrc says

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator  # noqa: E402

BLUE, ORANGE, GREY, GREEN, RED = "#1f77b4", "#ff7f0e", "#b0b0b0", "#2ca02c", "#d62728"
STAGE_COLOURS = {"manifest": GREY, "decode": ORANGE, "inference": RED}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _barh(ax, labels, values, colours, xlabel: str) -> None:
    """Horizontal bars, first item on top, with the values written at the bar ends."""
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:,}", va="center", fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.12)


def failures_chart(summary: dict) -> bytes | None:
    rows = summary["errors"]["by_error_type"]
    if not rows:
        return None
    fig = _figure(8, 1.2 + 0.3 * len(rows))
    ax = fig.add_subplot()
    _barh(ax, [f"{r['error_type']} ({r['stage']})" for r in rows], [r["count"] for r in rows],
          [STAGE_COLOURS.get(r["stage"], BLUE) for r in rows], "clips")
    ax.set_title("Failures by error type (stage)")
    return _png(fig)


def per_class_chart(summary: dict) -> bytes | None:
    classes = summary["scores"]["per_class"]
    if not classes:
        return None
    ordered = sorted(classes, key=lambda c: -c["top1"])
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    x = range(len(ordered))
    ax.bar(x, [c["top1"] for c in ordered], width=1.0, color=BLUE, label="top-1")
    if ordered[0]["top5"] is not None:
        ax.plot(x, [c["top5"] for c in ordered], "o", color=ORANGE,
                markersize=5 if len(ordered) <= 40 else 2, label="top-5")
    mean = summary["scores"]["accuracy"]["mean_per_class_top1"]
    ax.axhline(mean, color=RED, linewidth=1, label=f"mean per-class top-1 {mean:.1%}")
    ax.set_xlim(-0.5, len(ordered) - 0.5)
    if len(ordered) <= 40:
        ax.set_xticks(list(x), [c["label"] for c in ordered], rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"classes present in the ground truth ({len(ordered)}), best top-1 first")
    ax.set_ylabel("accuracy")
    ax.set_title("Per-class accuracy")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def confused_pairs_chart(summary: dict) -> bytes | None:
    pairs = summary["scores"]["most_confused"]
    if not pairs:
        return None
    fig = _figure(8, 1.2 + 0.28 * len(pairs))
    ax = fig.add_subplot()
    _barh(ax, [f"{p['true']} \u2192 {p['predicted']}" for p in pairs],
          [p["count"] for p in pairs], RED, "clips")
    ax.set_title("Most confused pairs (true \u2192 predicted)")
    return _png(fig)


def predicted_classes_chart(summary: dict) -> bytes | None:
    rows = summary["scores"]["most_predicted"]
    if not rows:
        return None
    fig = _figure(8, 1.2 + 0.26 * len(rows))
    ax = fig.add_subplot()
    _barh(ax, [r["label"] for r in rows], [r["count"] for r in rows], BLUE, "clips")
    ax.set_title(f"Most frequent predicted classes (top {len(rows)} of "
                 f"{summary['scores']['distinct_predicted_classes']})")
    return _png(fig)


def probability_chart(summary: dict) -> bytes | None:
    hist = summary["scores"]["top1_probability"]
    if not summary["scores"]["clips"]:
        return None
    edges = hist["edges"]
    width = edges[1] - edges[0]
    fig = _figure(8, 3.2)
    ax = fig.add_subplot()
    bottom = [0] * (len(edges) - 1)
    for key, colour, name in (("correct", GREEN, "top-1 correct"), ("wrong", RED, "top-1 wrong"),
                              ("unlabelled", GREY, "no label")):
        if any(hist[key]):
            ax.bar(edges[:-1], hist[key], width=width, align="edge", bottom=bottom,
                   color=colour, edgecolor="white", linewidth=0.5, label=name)
            bottom = [b + v for b, v in zip(bottom, hist[key])]
    ax.set_xlim(0, 1)
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("clips")
    ax.set_title("Distribution of top-1 probability")
    ax.legend(fontsize=8)
    return _png(fig)


def calibration_chart(summary: dict) -> bytes | None:
    cal = summary["scores"]["calibration"]
    bins = [b for b in cal["bins"] if b["clips"]]
    if not bins:
        return None
    fig = _figure(5, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "--", color=GREY, label="perfect calibration")
    ax.bar([b["low"] for b in bins], [b["accuracy"] for b in bins],
           width=bins[0]["high"] - bins[0]["low"], align="edge", color=BLUE,
           edgecolor="white", label="top-1 accuracy in bin")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o",
            color=ORANGE, markersize=3, label="mean probability in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Calibration (ECE {cal['ece']:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def num_frames_label(summary: dict) -> str:
    """The num_frames chart's axis: the frames decoded per clip at the rate the run
    sampled, from its metadata's recipe (clips are always at the recipe's 25 fps)."""
    import json

    from beam_i3d.media.recipe import SAMPLE_FPS

    try:
        fps = json.loads(summary["metadata"]["recipe"])["fps"]
    except (KeyError, TypeError, ValueError):
        fps = SAMPLE_FPS
    rate = f"{round(fps, 3):g}-fps" if isinstance(fps, (int, float)) else f"{fps}-fps"
    return f"num_frames (decoded {rate} frames per clip)"


def num_frames_chart(summary: dict) -> bytes | None:
    frames = summary["scores"]["num_frames"]
    if not frames["count"]:
        return None
    fig = _figure(8, 3.0)
    ax = fig.add_subplot()
    values, counts = frames["values"], frames["counts"]
    bins = min(60, values[-1] - values[0] + 1)
    ax.hist(values, bins=bins, weights=counts, color=BLUE)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(num_frames_label(summary))
    ax.set_ylabel("clips")
    ax.set_title(f"Distribution of num_frames (median {frames['median']})")
    return _png(fig)


# file stem -> (title, drawing function), in the report's order
CHARTS: dict[str, tuple[str, Callable[[dict], bytes | None]]] = {
    "failures": ("Failures by error type", failures_chart),
    "per_class_accuracy": ("Per-class accuracy", per_class_chart),
    "confused_pairs": ("Most confused pairs", confused_pairs_chart),
    "predicted_classes": ("Most frequent predicted classes", predicted_classes_chart),
    "top1_probability": ("Distribution of top-1 probability", probability_chart),
    "calibration": ("Calibration", calibration_chart),
    "num_frames": ("Distribution of num_frames", num_frames_chart),
}


# --- Timelines of windowed runs ----------------------------------------------------------

# One colour per label, the labels longest on screen first; tab10 without its grey, which
# is left for the labels beyond these ("other labels").
TIMELINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                    "#e377c2", "#bcbd22", "#17becf")
OTHER_LABELS = GREY
GAP_COLOUR = "#c8c8c8"  # the hatching of time no window scored
CLOCK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800,
               3600, 7200, 10800, 21600, 43200, 86400)


def timeline_gaps(segments: list[dict]) -> list[tuple[float, float]]:
    """The stretches ``(start, end)`` in seconds between a video's segments that no window
    scored (segments never span such time: :func:`beam_i3d.job.windows.merge_timeline`)."""
    ordered = sorted(segments, key=lambda s: s["start_sec"])
    out, reached = [], None
    for s in ordered:
        if reached is not None and s["start_sec"] > reached + 1e-6:
            out.append((reached, s["start_sec"]))
        reached = s["end_sec"] if reached is None else max(reached, s["end_sec"])
    return out


def label_colours(segments: list[dict]) -> dict[str, str]:
    """The colour of each of the (at most 9) labels that cover the most time, longest
    first (ties: the first to appear); other labels are drawn in grey."""
    covered: dict[str, float] = {}
    for s in segments:
        covered[s["label"]] = covered.get(s["label"], 0.0) + s["end_sec"] - s["start_sec"]
    ranked = sorted(covered, key=lambda label: -covered[label])  # stable: first seen wins
    return dict(zip(ranked, TIMELINE_COLOURS))


def clock_step(span: float) -> float:
    """Seconds between time ticks: the first of :data:`CLOCK_STEPS` giving at most ~10."""
    return next((s for s in CLOCK_STEPS if span / s <= 10), CLOCK_STEPS[-1])


def clock_tick(seconds: float, step: float, hours: bool) -> str:
    """``m:ss`` (``h:mm:ss`` for a span of an hour or more; tenths under 1-s steps)."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if step < 1:
        tenths = int(round(seconds * 10))
        whole, frac = divmod(tenths, 10)
        tail = f".{frac}"
    else:
        whole, tail = int(round(seconds)), ""
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if hours:
        return f"{sign}{h:d}:{m:02d}:{s:02d}{tail}"
    return f"{sign}{h * 60 + m:d}:{s:02d}{tail}"


def timeline_chart(entry: dict) -> bytes:
    """One video's timeline (an entry of the summary's ``timelines.shown``): a strip of
    its segments coloured by top-1 label, and under it, on the same time axis, each
    segment's mean top-1 probability (a band of the label's colour up to it) and each
    window's top-1 probability (a point at the window's middle, in its label's colour;
    the line breaks where windows are missing or do not touch). Time no window scored
    (between segments) is a gap: hatched grey in the strip, empty below."""
    segments, windows = entry["segments"], entry["windows"]
    colours = entry["colours"]
    start, end = entry["start_sec"], max(entry["end_sec"], entry["start_sec"] + 1e-3)
    fig = _figure(10, 3.8)
    strip, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 4])
    gaps = timeline_gaps(segments)
    if gaps:
        strip.broken_barh([(a, b - a) for a, b in gaps], (0, 1), facecolors="white",
                          edgecolors=GAP_COLOUR, hatch="////", linewidth=0)
    for s in segments:
        colour = colours.get(s["label"], OTHER_LABELS)
        width = s["end_sec"] - s["start_sec"]
        strip.broken_barh([(s["start_sec"], width)], (0, 1), facecolors=colour)
        ax.bar(s["start_sec"], s["mean_probability"], width=width, align="edge",
               color=colour, alpha=0.3, linewidth=0)
        ax.hlines(s["mean_probability"], s["start_sec"], s["end_sec"], colors=colour,
                  linewidth=2)
    if windows:
        xs, ys = [], []
        for previous, w in zip([None] + windows[:-1], windows):
            if previous is not None and (w["window_index"] != previous["window_index"] + 1
                                         or w["start_sec"] > previous["end_sec"] + 1e-6):
                xs.append(float("nan"))
                ys.append(float("nan"))
            xs.append((w["start_sec"] + w["end_sec"]) / 2)
            ys.append(w["probability"])
        ax.plot(xs, ys, color="#333333", linewidth=0.8, zorder=3)
        if len(windows) <= 400:
            ax.scatter([(w["start_sec"] + w["end_sec"]) / 2 for w in windows],
                       [w["probability"] for w in windows],
                       c=[colours.get(w["label"], OTHER_LABELS) for w in windows],
                       s=16, edgecolors="#333333", linewidths=0.5, zorder=4)
    step = clock_step(end - start)
    hours = end >= 3600
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock_tick(x, step, hours)))
    ax.set_xlim(start, end)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 probability")
    ax.set_xlabel("time in the video (h:mm:ss)" if hours else "time in the video (m:ss)")
    ax.grid(axis="y", color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.set_ylabel("top-1", fontsize=8)
    strip.tick_params(axis="x", labelbottom=False)
    strip.set_title(f"{entry['clip_id']}: {len(segments)} segment(s), "
                    f"{entry['windows_scored']}/{entry['num_windows']} windows scored"
                    + (f"\n{entry['layout']}" if entry.get("layout") else ""),
                    fontsize=10)
    handles = [Patch(color=c, label=label) for label, c in colours.items()]
    others = len({s["label"] for s in segments} - set(colours))
    if others:
        handles.append(Patch(color=OTHER_LABELS, label=f"{others} other label(s)"))
    if gaps:
        handles.append(Patch(facecolor="white", edgecolor=GAP_COLOUR, hatch="////",
                             label="not scored"))
    handles.append(Line2D([], [], color="#555555", linewidth=2, label="segment mean p"))
    if windows:
        handles.append(Line2D([], [], color="#333333", linewidth=0.8, marker="o",
                              markersize=4, markerfacecolor="white", label="window top-1 p"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return _png(fig)


def timeline_chart_name(position: int, clip_id: str) -> str:
    """File stem of the ``position``-th (from 1) timeline chart: ``timeline_1_<clip_id>``
    with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced."""
    import re

    return f"timeline_{position}_" + re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id)[:60]


def draw_timeline_charts(summary: dict) -> dict[str, bytes]:
    """PNG bytes of the timeline chart of each shown video, by file stem, in order; each
    entry of ``summary["timelines"]["shown"]`` gets its ``colours`` and ``chart``."""
    drawn = {}
    timelines = summary.get("timelines") or {"shown": []}
    for position, entry in enumerate(timelines["shown"], 1):
        entry["colours"] = label_colours(entry["segments"])
        name = timeline_chart_name(position, entry["clip_id"])
        entry["chart"] = f"{name}.png"
        drawn[name] = timeline_chart(entry)
    return drawn


def draw_charts(summary: dict) -> dict[str, bytes]:
    """PNG bytes of every chart that has data, by file stem, in report order."""
    drawn = {}
    for name, (_, draw) in CHARTS.items():
        png = draw(summary)
        if png is not None:
            drawn[name] = png
    return drawn
