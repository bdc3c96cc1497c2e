"""The timelines of a windowed run (``score --window``) as text: for the longest videos
(or one chosen with ``report --video``), the segments where the top-1 label stays the
same, in time order."""

from __future__ import annotations

from beam_i3d import fileio

LONGEST = 3  # videos shown without --video


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


def chosen(timelines: list[dict], video: str | None) -> list[dict]:
    """The timelines of ``video`` (a clip_id, row_key or video URI), else the longest."""
    if video is not None:
        return [t for t in timelines if video in (t["clip_id"], t["row_key"], t["video_uri"])]
    return sorted(timelines, key=lambda t: (-(t["end_sec"] - t["start_sec"]), t["row_key"])
                  )[:LONGEST]


def timeline_text(timelines: list[dict]) -> str:
    lines = []
    for t in timelines:
        lines.append(f"{t['clip_id']} ({t['video_uri']}): {clock(t['start_sec'])}-"
                     f"{clock(t['end_sec'])}, {t['windows_scored']}/{t['num_windows']} "
                     f"windows scored, {len(t['segments'])} segments")
        for s in t["segments"]:
            lines.append(f"  {clock(s['start_sec']):>10} - {clock(s['end_sec']):>10}  "
                         f"{s['label']}  (mean p {s['mean_probability']:.2f}, "
                         f"{s['num_windows']} windows)")
    return "\n".join(lines)
