"""The timelines of a windowed run (``score --window``): for the longest videos (or one
chosen with ``report --video``), the segments where the top-1 label stays the same, in
time order, as text, and the figures the report's timeline charts are drawn from (the
segments and each window's top-1 label and probability, from ``DIR/windows``)."""

from __future__ import annotations

from beam_i3d import fileio
from beam_i3d.errors import ReportError

LONGEST = 3  # videos shown without --video
WINDOW_COLUMNS = ("row_key", "run_id", "window_index", "window_start_sec", "window_end_sec",
                  "num_frames", "predicted_label", "predicted_probability")


def read_timelines(run_dir: str) -> list[dict]:
    """One timelines row per manifest row (the latest run's); ``[]`` if there are none."""
    from beam_i3d.job.results import list_shards, read_columns
    from schemas import TIMELINES_SCHEMA

    best: dict[str, dict] = {}
    for path in list_shards(fileio.join(run_dir, "timelines")):
        for row in read_columns(path, TIMELINES_SCHEMA.names).to_pylist():
            held = best.get(row["row_key"])
            if held is None or row["run_id"] > held["run_id"]:
                best[row["row_key"]] = row
    return list(best.values())


def clock(seconds: float) -> str:
    """``1:02:03.4`` / ``2:03.4``."""
    tenths = int(round(seconds * 10))
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    text = f"{minutes:d}:{rest / 10:04.1f}"
    return f"{hours:d}:{minutes:02d}:{rest / 10:04.1f}" if hours else text


def longest_first(timelines: list[dict]) -> list[dict]:
    return sorted(timelines, key=lambda t: (-(t["end_sec"] - t["start_sec"]), t["row_key"]))


def chosen(timelines: list[dict], video: str | None) -> list[dict]:
    """The timelines of ``video`` (a clip_id, row_key or video URI), else the longest."""
    if video is not None:
        return [t for t in timelines if video in (t["clip_id"], t["row_key"], t["video_uri"])]
    return longest_first(timelines)[:LONGEST]


def choose(run_dir: str, timelines: list[dict], video: str | None) -> list[dict]:
    """:func:`chosen`, where a ``video`` that has no timeline is a :class:`ReportError`
    saying which videos do (the longest first)."""
    shown = chosen(timelines, video)
    if video is None or shown:
        return shown
    where = fileio.join(run_dir, "timelines")
    if not timelines:
        raise ReportError(f"--video {video!r}: {where} holds no timelines; --video "
                          "applies to the output of a windowed run (score --window)")
    names = [t["clip_id"] for t in longest_first(timelines)]
    listed = ", ".join(names[:10]) + (f" and {len(names) - 10:,} more" if len(names) > 10
                                      else "")
    raise ReportError(f"--video {video!r}: no timeline of that clip_id, row_key or "
                      f"video URI in {where}; it has {len(names):,}: {listed}")


PLAN_COLUMNS = ("row_key", "run_id", "fps", "variable_frame_rate", "window_frames",
                "stride_frames", "window_sec", "stride_sec")
LAYOUT_KEYS = PLAN_COLUMNS[2:]


def read_plans(run_dir: str, row_keys) -> dict[str, dict]:
    """How the rows ``row_keys`` were windowed, from ``DIR/plans`` (the latest run's plan
    of each), by row key: :data:`LAYOUT_KEYS` (``fps``: frames per second sampled, the
    video's own under ``--fps native``; frame windows: ``window_frames``/``stride_frames``,
    seconds windows: ``window_sec``/``stride_sec``); None where a plan (version 3) lacks
    the column. Rows without a plan are left out."""
    from beam_i3d.job.results import list_shards, read_columns

    wanted = set(row_keys)
    best: dict[str, dict] = {}
    for path in list_shards(fileio.join(run_dir, "plans")):
        for row in read_columns(path, PLAN_COLUMNS).to_pylist():
            held = best.get(row["row_key"])
            if row["row_key"] in wanted and (held is None or row["run_id"] > held["run_id"]):
                best[row["row_key"]] = row
    return {key: {k: row.get(k) for k in LAYOUT_KEYS} for key, row in best.items()}


def window_layout(plan: dict) -> str:
    """What a row's windows are, in their own units: ``16-frame windows, stride 4 frames,
    at 29.97 fps (the video's own)`` (``--fps native``: its plan measured
    ``variable_frame_rate``), ``10-s windows, stride 5 s, at 25 fps``; "" if unknown."""
    fps = plan.get("fps")
    if plan.get("window_frames") is not None:
        if fps is None:
            return ""
        native = plan.get("variable_frame_rate") is not None
        return (f"{plan['window_frames']}-frame windows, stride {plan['stride_frames']} "
                f"frames, at {round(fps, 3):g} fps"
                + (" (the video's own" + (", variable)" if plan["variable_frame_rate"]
                                           else ")") if native else ""))
    if plan.get("window_sec") is None:
        return ""
    from beam_i3d.media.recipe import SAMPLE_FPS

    return (f"{plan['window_sec']:g}-s windows, stride {plan['stride_sec']:g} s, at "
            f"{round(fps if fps is not None else SAMPLE_FPS, 3):g} fps")


def read_windows(run_dir: str, row_keys, plans: dict[str, dict] | None = None
                 ) -> dict[str, list[dict]]:
    """The scored windows of the rows ``row_keys`` from ``DIR/windows``, by row key, in
    window order: ``window_index``, ``start_sec``, ``end_sec`` (the time its frames stand
    for, :func:`beam_i3d.job.windows.window_extent`, as in the segments: a frame window's
    own start and end, at the rate used, where ``plans`` (:func:`read_plans`) gives the
    row ``window_frames``), ``label`` (top-1), ``probability``. Reads only those columns;
    a window written more than once (retried work, a resumed run) is its latest run's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from beam_i3d.job.results import list_shards, read_columns

    wanted = pa.array(sorted(set(row_keys)), pa.string())
    best: dict[str, dict] = {}
    for path in list_shards(fileio.join(run_dir, "windows")):
        table = read_columns(path, WINDOW_COLUMNS)
        if table.num_rows == 0 or set(WINDOW_COLUMNS) - set(table.column_names):
            continue
        rows = pc.replace_substring_regex(table.column("row_key"), r"@w(0|[1-9][0-9]*)$", "")
        table = table.append_column("_row", rows).filter(pc.is_in(rows, value_set=wanted))
        for w in table.to_pylist():
            held = best.get(w["row_key"])
            if held is None or w["run_id"] > held["run_id"]:
                best[w["row_key"]] = w
    from beam_i3d.job.windows import window_extent

    plans = plans or {}
    out: dict[str, list[dict]] = {key: [] for key in wanted.to_pylist()}
    for w in sorted(best.values(), key=lambda w: w["window_index"]):
        in_frames = plans.get(w["_row"], {}).get("window_frames") is not None
        start, end = window_extent(w, in_frames)
        out[w["_row"]].append({"window_index": w["window_index"],
                               "start_sec": start, "end_sec": end,
                               "label": w["predicted_label"],
                               "probability": float(w["predicted_probability"])})
    return out


def timelines_summary(run_dir: str, video: str | None = None) -> dict | None:
    """The report's ``timelines`` figures: how many videos have one, how the shown ones
    were chosen, and each shown timeline with its segments, its windows (see
    :func:`read_windows`), how it was windowed (:data:`LAYOUT_KEYS`, from its plan) and
    ``layout``, that as text (:func:`window_layout`); None for a run without timelines
    (and no ``video`` asked)."""
    timelines = read_timelines(run_dir)
    if not timelines and video is None:
        return None
    shown = choose(run_dir, timelines, video)
    keys = [t["row_key"] for t in shown]
    plans = read_plans(run_dir, keys)
    windows = read_windows(run_dir, keys, plans)
    no_plan = dict.fromkeys(LAYOUT_KEYS)
    return {
        "videos": len(timelines),
        "chosen_by": f"--video {video}" if video is not None else
                     f"the {min(LONGEST, len(timelines))} longest",
        "shown": [{**{k: t[k] for k in ("clip_id", "row_key", "video_uri", "label",
                                        "num_windows", "windows_scored", "start_sec",
                                        "end_sec", "run_id")},
                   **plans.get(t["row_key"], no_plan),
                   "layout": window_layout(plans.get(t["row_key"], no_plan)),
                   "segments": t["segments"], "windows": windows[t["row_key"]]}
                  for t in shown],
    }


def timeline_text(timelines: list[dict]) -> str:
    lines = []
    for t in timelines:
        lines.append(f"{t['clip_id']} ({t['video_uri']}): {clock(t['start_sec'])}-"
                     f"{clock(t['end_sec'])}, {t['windows_scored']}/{t['num_windows']} "
                     f"windows scored, {len(t['segments'])} segments"
                     + (f"; {t['layout']}" if t.get("layout") else ""))
        for s in t["segments"]:
            lines.append(f"  {clock(s['start_sec']):>10} - {clock(s['end_sec']):>10}  "
                         f"{s['label']}  ({s['end_sec'] - s['start_sec']:.2f} s, "
                         f"mean p {s['mean_probability']:.2f}, "
                         f"{s['num_windows']} windows)")
    return "\n".join(lines)
