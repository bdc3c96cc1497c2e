"""``beam-i3d report``: exact figures on datasets with known labels and predictions,
the self-contained HTML with every chart, empty cases, windowed runs' timelines, gs://
input, and a headless Chromium rendering of the page."""

from __future__ import annotations

import base64
import collections
import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_i3d import cli
from beam_i3d.errors import ReportError
from beam_i3d.report import metrics
from beam_i3d.report.build import build_report, compute_summary
from beam_i3d.report.charts import CHARTS
from beam_i3d.report.render import text_summary
from model.labels import label_map
from schemas import ERRORS_SCHEMA, SCORES_SCHEMA, with_run_metadata

from conftest import upload

K400 = label_map(400)
A, B, C, D = K400[0], K400[1], K400[2], K400[3]   # abseiling, air drumming, ...
OTHER = K400[100:120]                              # fillers for top-k lists
UNKNOWN = "not a kinetics class"

RUN_METADATA = {"streams": "rgb", "rgb_checkpoint": "default", "label_map": "kinetics-400",
                "num_classes": 400, "recipe": {"frames": 64, "fps": 25, "resize": 256},
                "version": "0.1.0"}


# --- Building datasets ---------------------------------------------------------------


def score_row(clip_id: str, label: str | None, predicted: str, top_k: list[str],
              probability: float = 0.5, num_frames: int = 64, names=K400) -> dict:
    """One scores row; ``top_k`` lists labels best first and must start with ``predicted``."""
    assert top_k[0] == predicted
    return {
        "clip_id": clip_id, "video_uri": f"gs://videos/{clip_id}.mp4", "start_sec": None,
        "end_sec": None, "label": label, "num_frames": num_frames,
        "predicted_label": predicted, "predicted_index": names.index(predicted),
        "predicted_probability": probability,
        "top_k": [{"label": name, "index": names.index(name), "probability": 0.1,
                   "logit": 1.0} for name in top_k],
        "logits": [0.0] * len(names), "rgb_logits": [0.0] * len(names), "flow_logits": None,
        "rgb_embedding": [0.0] * 1024, "flow_embedding": None,
        "row_key": clip_id, "run_id": "20260101T000000Z-test",
    }


def error_row(clip_id: str, stage: str, error_type: str, message: str,
              row_key: str | None = None, run_id: str = "20260101T000000Z-test") -> dict:
    return {"clip_id": clip_id, "video_uri": f"gs://videos/{clip_id}.mp4", "stage": stage,
            "error_type": error_type, "message": message, "source": "manifest.csv:2",
            "row_key": row_key or clip_id, "run_id": run_id}


def write_parts(directory: Path, rows: list[dict], schema: pa.Schema, parts: int,
                metadata: dict | list[dict] = RUN_METADATA) -> list[Path]:
    """Write ``rows`` as ``parts`` Parquet files (round-robin; some may be empty); one
    metadata dict for all, or one per part."""
    directory.mkdir(parents=True, exist_ok=True)
    metas = metadata if isinstance(metadata, list) else [metadata] * parts
    paths = []
    for i in range(parts):
        part_schema = with_run_metadata(schema, metas[i])
        table = pa.Table.from_pylist(rows[i::parts], schema=part_schema)
        path = directory / f"part-{i:05d}-of-{parts:05d}.parquet"
        pq.write_table(table, path, row_group_size=3)
        paths.append(path)
    return paths


def known_scores() -> list[dict]:
    """Scores with hand-counted figures (see KNOWN below)."""
    o = OTHER
    return [
        # A: 4 clips, 3 right; the 4th predicted B with A second in top-5
        score_row("a1", A, A, [A, *o[:4]], 0.97, 64),
        score_row("a2", A, A, [A, *o[:4]], 0.85, 64),
        score_row("a3", A, A, [A, *o[:4]], 0.75, 250),
        score_row("a4", A, B, [B, A, *o[:3]], 0.40, 250),
        # B: 3 clips, 1 right; predicted C twice, B fifth in one top-5, absent from the other
        score_row("b1", B, B, [B, *o[:4]], 0.90, 100),
        score_row("b2", B, C, [C, *o[:3], B], 0.30, 100),
        score_row("b3", B, C, [C, *o[:4]], 0.30, 100),
        # C: 2 clips, both predicted A, C not in top-5
        score_row("c1", C, A, [A, *o[:4]], 0.60, 100),
        score_row("c2", C, A, [A, *o[4:8]], 0.60, 100),
        # D: 1 clip, right
        score_row("d1", D, D, [D, *o[:4]], 0.99, 32),
        # a label outside the label map: wrong
        score_row("u1", UNKNOWN, A, [A, *o[:4]], 0.55, 64),
        # no label (null or empty): not in accuracy
        score_row("n1", None, A, [A, *o[:4]], 0.20, 64),
        score_row("n2", None, D, [D, *o[:4]], 0.20, 64),
        score_row("n3", None, A, [A, *o[:4]], 0.25, 64),
        score_row("n4", "", B, [B, *o[:4]], 0.25, 64),
    ]


KNOWN = {
    "clips": 15, "labelled": 11, "top1_correct": 5, "top5_correct": 7,
    # per class top-1: A 3/4, B 1/3, C 0, D 1, UNKNOWN 0
    "mean_per_class_top1": (3 / 4 + 1 / 3 + 0 + 1 + 0) / 5,
    "confused": [(B, C, 2), (C, A, 2), (A, B, 1), (UNKNOWN, A, 1)],
    "predicted": {A: 8, B: 3, C: 2, D: 2},
}


def known_errors() -> list[dict]:
    return ([error_row(f"e{i}", "decode", "CorruptVideo", f"gs://videos/e{i}.mp4: truncated")
             for i in range(5)]
            + [error_row(f"v{i}", "decode", "NotAVideo", f"gs://videos/v{i}.mp4: not a video")
               for i in range(2)]
            + [error_row("a1", "manifest", "DuplicateClip", "a1 seen before at row 2",
                         row_key="a1#repeat1"),
               error_row("x1", "inference", "InvalidModelInput", "clip x1: too short")])


@pytest.fixture()
def known_run(tmp_path) -> Path:
    run = tmp_path / "run"
    write_parts(run / "scores", known_scores(), SCORES_SCHEMA, parts=4)
    write_parts(run / "errors", known_errors(), ERRORS_SCHEMA, parts=2)
    # an empty part file, as a worker with nothing to write leaves
    pq.write_table(pa.Table.from_pylist([], schema=with_run_metadata(SCORES_SCHEMA, RUN_METADATA)),
                   run / "scores" / "part-empty.parquet")
    return run


# --- The figures ---------------------------------------------------------------------


def test_known_dataset_accuracies_are_exact(known_run, tmp_path):
    summary = build_report(str(known_run), str(tmp_path / "out"))
    s = summary["scores"]
    assert (s["clips"], s["labelled"], s["unlabelled"]) == (15, 11, 4)
    acc = s["accuracy"]
    assert acc["top1_correct"] == 5 and acc["top1"] == 5 / 11
    assert acc["top5_correct"] == 7 and acc["top5"] == 7 / 11
    assert acc["mean_per_class_top1"] == pytest.approx(KNOWN["mean_per_class_top1"], abs=1e-12)
    assert acc["classes_in_ground_truth"] == 5

    per_class = {c["label"]: c for c in s["per_class"]}
    assert {k: (c["support"], c["top1_correct"], c["top5_correct"])
            for k, c in per_class.items()} == {
        A: (4, 3, 4), B: (3, 1, 2), C: (2, 0, 0), D: (1, 1, 1), UNKNOWN: (1, 0, 0)}
    assert per_class[B]["most_predicted_instead"] == C
    assert [(p["true"], p["predicted"], p["count"]) for p in s["most_confused"]] == \
        KNOWN["confused"]
    assert s["most_confused"][0]["share"] == 2 / 3
    assert {r["label"]: r["count"] for r in s["most_predicted"]} == KNOWN["predicted"]
    assert s["labels_outside_label_map"] == [{"label": UNKNOWN, "clips": 1}]
    assert any(UNKNOWN in w and "not in the label map" in w for w in summary["warnings"])

    # num_frames 32 x1, 64 x7, 100 x5, 250 x2
    frames = s["num_frames"]
    assert (frames["min"], frames["median"], frames["max"]) == (32, 64, 250)
    assert frames["mean"] == pytest.approx((32 + 64 * 7 + 100 * 5 + 250 * 2) / 15)
    assert dict(zip(frames["values"], frames["counts"])) == {32: 1, 64: 7, 100: 5, 250: 2}

    prob = s["top1_probability"]
    assert sum(prob["correct"]) == 5 and sum(prob["wrong"]) == 6 and sum(prob["unlabelled"]) == 4
    assert prob["correct"][19] == 2    # 0.97 and 0.99 in [0.95, 1.0]
    assert prob["wrong"][6] == 2       # b2, b3 at 0.30

    e = summary["errors"]
    assert e["failures"] == 9
    assert e["by_stage"] == {"decode": 7, "inference": 1, "manifest": 1}
    assert [(r["error_type"], r["stage"], r["count"], len(r["examples"]))
            for r in e["by_error_type"]] == [
        ("CorruptVideo", "decode", 5, 3), ("NotAVideo", "decode", 2, 2),
        ("InvalidModelInput", "inference", 1, 1), ("DuplicateClip", "manifest", 1, 1)]
    assert "truncated" in e["by_error_type"][0]["examples"][0]["message"]

    # what the user reads states the same figures
    text = text_summary(summary)
    assert "clips: 15 scored, 9 failed (37.50% of 24 failed)" in text
    assert "labels: 11 of 15 scored clips have one (4 without)" in text
    assert f"top-1 accuracy: {100 * 5 / 11:.2f}% (5 of 11)" in text
    assert f"top-5 accuracy: {100 * 7 / 11:.2f}% (7 of 11)" in text
    assert f"mean per-class top-1 accuracy: {100 * 5 / 12:.2f}% over 5 classes" in text
    assert f"{B} -> {C} (2)" in text
    page = (tmp_path / "out" / "report.html").read_text()
    for figure in (f"{100 * 5 / 11:.2f}%", f"{100 * 7 / 11:.2f}%", f"{100 * 5 / 12:.2f}%"):
        assert figure in page
    for true, predicted, count in KNOWN["confused"]:
        assert (f"<td>{true}</td><td>{predicted}</td><td class=\"n\">{count}</td>") in page
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["scores"]["accuracy"] == acc


def naive_figures(rows: list[dict]) -> dict:
    """The figures by the definitions, one row at a time (independent of the report)."""
    labelled = [r for r in rows if r["label"]]
    top1 = sum(r["label"] == r["predicted_label"] for r in labelled)
    top5 = sum(r["label"] in [e["label"] for e in r["top_k"][:5]] for r in labelled)
    per_class = collections.defaultdict(list)
    for r in labelled:
        per_class[r["label"]].append(r["label"] == r["predicted_label"])
    pairs = collections.Counter((r["label"], r["predicted_label"]) for r in labelled
                                if r["label"] != r["predicted_label"])
    confused = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))[:20]
    predicted = collections.Counter(r["predicted_label"] for r in rows)
    return {"labelled": len(labelled), "top1": top1, "top5": top5,
            "mean_per_class": sum(sum(v) / len(v) for v in per_class.values()) / len(per_class),
            "confused": [(t, p, n) for (t, p), n in confused],
            "most_predicted": sorted(predicted.items(), key=lambda kv: (-kv[1], kv[0]))[:30]}


def random_scores(n: int, names, k: int, seed: int) -> list[dict]:
    """Clips whose predictions are right about half the time, on 40 of the classes."""
    rng = np.random.default_rng(seed)
    classes = list(rng.choice(len(names), 40, replace=False))
    rows = []
    for i in range(n):
        true = names[classes[rng.integers(40)]]
        if rng.random() < 0.5:
            predicted = true
        else:
            predicted = names[classes[rng.integers(40)]]
        rest = [names[j] for j in rng.choice(len(names), k + 1, replace=False)
                if names[j] != predicted][:k - 1]
        if rng.random() < 0.3 and true not in rest and true != predicted:
            rest[rng.integers(k - 1)] = true      # the truth somewhere in top-k (maybe > 5)
        label = None if rng.random() < 0.1 else true
        rows.append(score_row(f"c{i}", label, predicted, [predicted, *rest],
                              float(rng.random()), int(rng.integers(20, 300)), names))
    return rows


def test_600_classes_with_top7_match_the_definitions(tmp_path):
    names = label_map(600)
    rows = random_scores(1500, names, k=7, seed=3)
    meta = {**RUN_METADATA, "label_map": "kinetics-600", "num_classes": 600}
    write_parts(tmp_path / "run" / "scores", rows, SCORES_SCHEMA, parts=3, metadata=meta)
    write_parts(tmp_path / "run" / "errors", [], ERRORS_SCHEMA, parts=1, metadata=meta)
    summary = compute_summary(str(tmp_path / "run"))
    want = naive_figures(rows)
    s = summary["scores"]
    assert s["labelled"] == want["labelled"]
    assert s["accuracy"]["top1_correct"] == want["top1"]
    assert s["accuracy"]["top5_correct"] == want["top5"]     # the first 5 of 7 only
    assert s["accuracy"]["top5"] == want["top5"] / want["labelled"]
    assert s["accuracy"]["mean_per_class_top1"] == pytest.approx(want["mean_per_class"],
                                                                 rel=1e-12)
    assert [(p["true"], p["predicted"], p["count"]) for p in s["most_confused"]] == \
        want["confused"]
    assert [(r["label"], r["count"]) for r in s["most_predicted"]] == want["most_predicted"]
    assert s["top_k_entries"] == {"min": 7, "max": 7}
    assert summary["label_map"]["classes"] == [600]
    assert not s["labels_outside_label_map"]
    assert summary["errors"]["failures"] == 0


def test_top5_is_unavailable_when_the_run_kept_fewer(tmp_path):
    rows = [score_row(f"c{i}", A, A if i % 2 else B, [A if i % 2 else B, *OTHER[:2]])
            for i in range(6)]
    write_parts(tmp_path / "run" / "scores", rows, SCORES_SCHEMA, parts=2)
    summary = compute_summary(str(tmp_path / "run"))
    acc = summary["scores"]["accuracy"]
    assert acc["top1"] == 0.5 and acc["top5"] is None and acc["top5_correct"] is None
    assert "unavailable" in acc["top5_note"] and "top 3" in acc["top5_note"]
    assert "top-5 accuracy: unavailable" in text_summary(summary)
    assert not any("errors/" in w for w in summary["warnings"])  # none failed: fine (#21)


def test_pure_functions():
    confusion = np.array([[5, 2, 0], [0, 1, 3], [2, 0, 0]])
    names = ["b", "a", "c"]
    pairs = metrics.most_confused_pairs(confusion, names, n=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "c", 3),
                                                                       ("b", "a", 2)]
    rows = metrics.class_table(confusion, np.array([6, 4, 0]), names)
    assert [(r["label"], r["support"], r["top1"], r["top5"]) for r in rows] == [
        ("c", 2, 0.0, 0.0), ("a", 4, 0.25, 1.0), ("b", 7, 5 / 7, 6 / 7)]
    hits = metrics.top_k_hits(np.array([1, 2, -1]), np.array([0, 5, 10, 15]),
                              np.array([0, 1, 3, 3, 3, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9]))
    assert hits.tolist() == [True, False, False]
    stats = metrics.count_stats(np.bincount([3, 3, 4, 10]))
    assert (stats["min"], stats["median"], stats["max"], stats["mean"]) == (3, 3, 10, 5.0)
    cal = metrics.calibration(np.array([1, 0]), np.array([1, 2]), np.array([0.5, 2.4]))
    assert cal["ece"] == pytest.approx((2 * abs(0.5 - 0.25) + 2 * abs(0.0 - 1.2)) / 4)
    from beam_i3d.report.charts import num_frames_label

    assert num_frames_label({"metadata": {"recipe": json.dumps({"fps": 25})}}) == \
        "num_frames (decoded 25-fps frames per clip)"
    assert num_frames_label({"metadata": {"recipe": json.dumps({"fps": 12})}}) == \
        "num_frames (decoded 12-fps frames per clip)"
    assert num_frames_label({"metadata": {}}) == "num_frames (decoded 25-fps frames per clip)"
    vocab = metrics.Vocabulary(["x", "y"])
    codes = vocab.encode(pa.array(["y", None, "z", "x"]).dictionary_encode())
    assert codes.tolist() == [1, -1, 2, 0] and vocab.outside_label_map == ["z"]


def test_rows_written_twice_count_once(tmp_path):
    """Shards repeated by retried work, and an error a later run scored, count once."""
    run = tmp_path / "run"
    scores = known_scores()
    write_parts(run / "scores", scores + scores[:3], SCORES_SCHEMA, parts=3)
    errors = known_errors() + known_errors()[:2] + [
        # failed first (a time-out), scored by a later run with --retry-errors
        error_row("d1", "decode", "DecodeTimeout", "gs://videos/d1.mp4: took too long",
                  run_id="20250101T000000Z-older")]
    write_parts(run / "errors", errors, ERRORS_SCHEMA, parts=2)
    summary = compute_summary(str(run))
    assert summary["scores"]["clips"] == KNOWN["clips"]
    assert summary["scores"]["accuracy"]["top1_correct"] == KNOWN["top1_correct"]
    assert summary["errors"]["failures"] == len(known_errors())
    assert any("6 row(s) appear more than once" in w for w in summary["warnings"])


def test_reads_only_the_needed_columns(known_run, monkeypatch):
    requested = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        requested.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    original_read = pq.ParquetFile.read
    key_reads = []

    def read_keys_only(self, columns=None, **kwargs):
        # Deduplication (beam_i3d.job.results) reads the key columns, nothing else.
        if columns is None or not set(columns) <= {"row_key", "clip_id", "run_id",
                                                   "error_type", "stage"}:
            pytest.fail(f"read of {columns or 'every column'}")
        key_reads.append(columns)
        return original_read(self, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", read_keys_only)
    compute_summary(str(known_run))
    assert key_reads
    assert requested and all(cols is not None for cols in requested)
    read = set().union(*requested)
    assert read <= {"label", "predicted_label", "predicted_probability", "num_frames",
                    "top_k.list.element.label", "stage", "error_type", "message", "clip_id"}
    assert "top_k.list.element.label" in read


# --- The files -----------------------------------------------------------------------


class _ResourceCollector(html.parser.HTMLParser):
    """Tags and the attributes through which a page could load something."""

    def __init__(self):
        super().__init__()
        self.tags, self.references = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action", "background"):
                self.references.append((tag, name, value or ""))


def test_html_is_self_contained_with_every_chart(known_run, tmp_path):
    out = tmp_path / "out"
    summary = build_report(str(known_run), str(out))
    assert summary["charts"] == [f"{name}.png" for name in CHARTS]
    page = (out / "report.html").read_text()
    parser = _ResourceCollector()
    parser.feed(page)
    assert not parser.tags & {"script", "link", "iframe", "object", "embed", "video", "audio",
                              "source", "base"}
    assert "url(" not in page and "@import" not in page
    assert all(v.startswith("data:image/png;base64,") for _, _, v in parser.references), \
        parser.references
    embedded = {v[len("data:image/png;base64,"):] for _, _, v in parser.references}
    for name in CHARTS:
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert base64.b64encode(png).decode() in embedded, name
        assert f'id="chart-{name}"' in page
    assert len(embedded) == len(CHARTS)
    # run metadata is shown
    assert "rgb_checkpoint" in page and "kinetics-400" in page and '&quot;frames&quot;: 64' in page


def test_cli_prints_summary_and_writes_default_out(known_run, capsys):
    assert cli.main(["report", str(known_run)]) == 0
    out = capsys.readouterr().out
    assert f"top-1 accuracy: {100 * 5 / 11:.2f}% (5 of 11)" in out
    assert f"report: {known_run / 'report' / 'report.html'} (7 charts" in out
    assert {p.name for p in (known_run / "report").iterdir()} == {
        "report.html", "summary.json", *(f"{n}.png" for n in CHARTS)}


# --- Empty and odd cases -------------------------------------------------------------


def test_no_outputs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ReportError, match="neither scores/ nor errors/"):
        compute_summary(str(tmp_path))
    assert cli.main(["report", str(tmp_path / "missing")]) == 1  # README: bad input
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing'} does not exist" in err and "neither" not in err


def test_a_file_that_is_not_parquet_is_named(known_run):
    bad = known_run / "errors" / "part-bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ReportError, match="part-bad.parquet: cannot read it as Parquet"):
        compute_summary(str(known_run))


def test_all_clips_failed(tmp_path):
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    write_parts(run / "errors", known_errors(), ERRORS_SCHEMA, parts=2)
    summary = build_report(str(run), str(tmp_path / "out"))
    assert summary["scores"]["clips"] == 0 and summary["errors"]["failures"] == 9
    assert summary["charts"] == ["failures.png"]
    text = text_summary(summary)
    assert "clips: 0 scored, 9 failed (100.00% of 9 failed)" in text
    assert "accuracy: no clips were scored" in text
    assert "No clips were scored." in (tmp_path / "out" / "report.html").read_text()
    assert summary["metadata"]["label_map"] == "kinetics-400"   # from the errors' files


def test_no_errors_and_no_labels(tmp_path):
    run = tmp_path / "run"
    rows = [score_row(f"c{i}", None, A, [A, *OTHER[:4]], 0.1 * i, 64) for i in range(8)]
    write_parts(run / "scores", rows, SCORES_SCHEMA, parts=2)
    write_parts(run / "errors", [], ERRORS_SCHEMA, parts=1)
    summary = build_report(str(run), str(tmp_path / "out"))
    s = summary["scores"]
    assert s["labelled"] == 0 and s["accuracy"]["top1"] is None
    assert s["accuracy"]["mean_per_class_top1"] is None and s["most_confused"] == []
    assert summary["errors"]["failures"] == 0
    assert set(summary["charts"]) == {"predicted_classes.png", "top1_probability.png",
                                      "num_frames.png"}
    text = text_summary(summary)
    assert "clips: 8 scored, 0 failed (0.00% of 8 failed)" in text
    assert "none of the 8 scored clips has a label" in text
    page = (tmp_path / "out" / "report.html").read_text()
    assert "No failures" in page and "calibration cannot be shown" in page
    assert not summary["warnings"]


def test_part_files_that_disagree_on_metadata_are_flagged(tmp_path):
    rows = known_scores()
    other = {**RUN_METADATA, "version": "0.2.0", "rgb_checkpoint": "gs://ckpt/rgb_imagenet"}
    write_parts(tmp_path / "run" / "scores", rows, SCORES_SCHEMA, parts=3,
                metadata=[RUN_METADATA, RUN_METADATA, other])
    summary = build_report(str(tmp_path / "run"), str(tmp_path / "out"))
    keys = [d["key"] for d in summary["metadata_disagreements"]]
    assert keys == ["rgb_checkpoint", "version"]
    assert summary["metadata"]["version"] == "0.1.0"
    assert any("disagree on run metadata version" in w and "'0.2.0' in 1 file(s)" in w
               for w in summary["warnings"])
    assert "gs://ckpt/rgb_imagenet" in (tmp_path / "out" / "report.html").read_text()


def test_a_resumed_output_and_one_without_errors_are_not_warned_about(tmp_path):
    """Issue #21: files of two runs (a resume) differ in run_id, which is normal; a run
    with no errors/ (none failed) or no scores/ (none scored) is complete as it is."""
    rows = [r for r in known_scores() if r["label"] != "not a kinetics class"]
    run = tmp_path / "run"
    write_parts(run / "scores", rows, SCORES_SCHEMA, parts=2,
                metadata=[{**RUN_METADATA, "run_id": "20250101T000000Z-aaaa"},
                          {**RUN_METADATA, "run_id": "20250102T000000Z-bbbb"}])
    summary = compute_summary(str(run))
    assert summary["metadata_disagreements"] == [] and summary["warnings"] == []
    assert summary["errors"]["failures"] == 0
    failed = tmp_path / "failed"
    write_parts(failed / "errors", known_errors(), ERRORS_SCHEMA, parts=1)
    summary = compute_summary(str(failed))
    assert summary["warnings"] == [] and summary["scores"]["clips"] == 0
    # Other metadata still disagrees out loud.
    write_parts(run / "errors", known_errors(), ERRORS_SCHEMA, parts=1,
                metadata={**RUN_METADATA, "top_k": 3, "run_id": "20250103T000000Z-cccc"})
    assert [d["key"] for d in compute_summary(str(run))["metadata_disagreements"]] == ["top_k"]


def test_runs_without_label_map_metadata(tmp_path):
    rows = known_scores()
    write_parts(tmp_path / "run" / "scores", rows, SCORES_SCHEMA, parts=2,
                metadata={"streams": "rgb"})
    summary = compute_summary(str(tmp_path / "run"))
    acc = summary["scores"]["accuracy"]
    assert (acc["top1_correct"], acc["top5_correct"]) == (5, 7)
    assert acc["mean_per_class_top1"] == pytest.approx(KNOWN["mean_per_class_top1"], abs=1e-12)
    assert summary["scores"]["labels_outside_label_map"] == []   # nothing to check against
    assert any("names no label map" in w for w in summary["warnings"])


# --- Windowed runs: timelines ------------------------------------------------------------

WINDOWED_RUN = "20260102T000000Z-windowed"


def window_rows(clip_id: str, labels: list[str], window: float = 10.0,
                probabilities: list[float] | None = None, failed=(), run_id=WINDOWED_RUN):
    """The windows rows of one video, window k labelled ``labels[k]`` (those in ``failed``
    left out), stride = window, the last window ending at ``len(labels) * window``."""
    rows = []
    for k, label in enumerate(labels):
        if k in failed:
            continue
        p = probabilities[k] if probabilities else 0.4 + 0.05 * (k % 12)
        row = score_row(clip_id, None, label, [label, *[o for o in OTHER if o != label][:4]],
                        p, 250)
        row.update(row_key=f"{clip_id}@w{k}", run_id=run_id, window_index=k,
                   window_start_sec=k * window, window_end_sec=(k + 1) * window,
                   num_windows=len(labels))
        rows.append(row)
    return rows


def windowed_dataset(run: Path, videos: dict[str, list[str]], failed: dict = {},
                     extra_windows=()) -> dict:
    """A windowed run's outputs, written directly: windows/, timelines/ (merged from the
    windows as the job merges them), plans/ and errors/ (the failed windows)."""
    from beam_i3d.job.windows import merge_timeline
    from schemas import PLANS_SCHEMA, TIMELINES_SCHEMA, WINDOWS_SCHEMA

    windows, timelines, plans, errors = [], [], [], []
    for clip_id, labels in videos.items():
        rows = window_rows(clip_id, labels, failed=failed.get(clip_id, ()))
        windows += rows
        segments = merge_timeline(rows)
        timelines.append({"clip_id": clip_id, "video_uri": f"gs://videos/{clip_id}.mp4",
                          "label": None, "num_windows": len(labels),
                          "windows_scored": len(rows), "start_sec": 0.0,
                          "end_sec": 10.0 * len(labels), "segments": segments,
                          "row_key": clip_id, "run_id": WINDOWED_RUN})
        plans.append({"clip_id": clip_id, "video_uri": f"gs://videos/{clip_id}.mp4",
                      "duration_sec": 10.0 * len(labels), "range_start_sec": 0.0,
                      "range_end_sec": 10.0 * len(labels), "window_sec": 10.0,
                      "stride_sec": 10.0, "num_windows": len(labels), "row_key": clip_id,
                      "run_id": WINDOWED_RUN})
        errors += [error_row(clip_id, "decode", "CorruptVideo", f"window {k}: bad packet",
                             row_key=f"{clip_id}@w{k}", run_id=WINDOWED_RUN)
                   for k in failed.get(clip_id, ())]
    errors.append(error_row("gone", "decode", "VideoNotFound", "gs://videos/gone.mp4",
                            run_id=WINDOWED_RUN))
    write_parts(run / "windows", windows + list(extra_windows), WINDOWS_SCHEMA, parts=3)
    write_parts(run / "timelines", timelines, TIMELINES_SCHEMA, parts=1)
    write_parts(run / "plans", plans, PLANS_SCHEMA, parts=1)
    write_parts(run / "errors", errors, ERRORS_SCHEMA, parts=1)
    return {"windows": windows, "timelines": {t["clip_id"]: t for t in timelines}}


def png_pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def colour_pixels(image: np.ndarray, colour: str, tolerance: int = 6) -> np.ndarray:
    """Mask of the pixels of ``colour`` (``#rrggbb``)."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return np.abs(image - rgb).max(axis=2) <= tolerance


def band_columns(image: np.ndarray, *colours: str) -> list[np.ndarray]:
    """The columns of each colour along the segment strip: the pixel row with most pixels
    of these colours, in its longest unbroken run of them (not the legend's patches)."""
    masks = [colour_pixels(image, c, tolerance=2) for c in colours]
    row = int(np.argmax(sum(m.sum(axis=1) for m in masks)))
    cols = np.flatnonzero(np.logical_or.reduce([m[row] for m in masks]))
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    strip = max(runs, key=len)
    return [np.intersect1d(np.flatnonzero(m[row]), strip) for m in masks]


def test_clock_ticks_and_label_colours():
    from beam_i3d.report.charts import (OTHER_LABELS, TIMELINE_COLOURS, clock_step,
                                        clock_tick, label_colours)

    assert [clock_tick(x, 2, False) for x in (0, 2, 62, 600)] == [
        "0:00", "0:02", "1:02", "10:00"]
    assert clock_tick(7265, 600, True) == "2:01:05"
    assert clock_tick(1.2, 0.2, False) == "0:01.2"
    assert (clock_step(17.48), clock_step(600), clock_step(7200), clock_step(1.6)) == (
        2, 60, 900, 0.2)
    segments = [{"label": label, "start_sec": s, "end_sec": e}
                for label, s, e in [("a", 0, 5), ("b", 5, 30), ("a", 30, 40), ("c", 40, 50)]]
    assert label_colours(segments) == {"b": TIMELINE_COLOURS[0], "a": TIMELINE_COLOURS[1],
                                       "c": TIMELINE_COLOURS[2]}
    many = [{"label": f"l{i}", "start_sec": i, "end_sec": i + 1 + (20 - i) / 100}
            for i in range(12)]
    colours = label_colours(many)
    assert list(colours) == [f"l{i}" for i in range(9)] and OTHER_LABELS not in colours.values()


def test_windowed_run_report_has_timeline_charts(tmp_path, capsys):
    """A windowed run (no scores/): counted in windows; the 3 longest videos' timelines
    are charted (bands in one colour per label, 9 colours then grey) with their segment
    tables; a window written twice is its latest run's; failed windows are a gap."""
    from beam_i3d.report.charts import OTHER_LABELS, TIMELINE_COLOURS
    from beam_i3d.report.timelines import clock

    twelve = K400[200:212]
    # 2 hours: 12 labels in runs of 60 windows, so each label covers 10 minutes
    lecture = [twelve[k // 60] for k in range(720)]
    older = window_rows("lecture", lecture, probabilities=[0.01] * 720,
                        run_id="20250101T000000Z-older")[5]
    run = tmp_path / "run"
    made = windowed_dataset(run, {"lecture": lecture, "mid": [A] * 30 + [B] * 30,
                                  "short": [C, C, D, D, C, C], "tiny": [A, A]},
                            failed={"lecture": (100, 101)}, extra_windows=[older])
    out = tmp_path / "out"
    assert cli.main(["report", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"beam-i3d report for {run}\n")  # the header first (#21)
    # 12 labels, and the failed windows 100-101 split their label's run: 13 segments.
    timeline = ("\nlecture (gs://videos/lecture.mp4): 0:00.0-2:00:00.0, 718/720 windows "
                "scored, 13 segments")
    assert timeline in printed and printed.index(timeline) > printed.index("windows: ")
    lecture_segments = made["timelines"]["lecture"]["segments"]
    assert [(s["label"], s["start_sec"], s["end_sec"]) for s in lecture_segments[1:3]] == [
        (twelve[1], 600.0, 1000.0), (twelve[1], 1020.0, 1200.0)]
    assert ("windows: 786 scored of 788 planned over 4 manifest row(s); failures: "
            "2 window(s), 1 manifest row(s)") in printed
    assert "accuracy" not in printed and "clips:" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [w[:40] for w in summary["warnings"]] == ["1 row(s) appear more than once in the sh"]
    assert summary["windows"] == {"files": 3, "scored": 786, "planned": 788,
                                  "rows_planned": 4, "window_failures": 2, "row_failures": 1}
    shown = summary["timelines"]["shown"]
    assert [t["clip_id"] for t in shown] == ["lecture", "mid", "short"]
    assert summary["charts"][:3] == ["timeline_1_lecture.png", "timeline_2_mid.png",
                                     "timeline_3_short.png"]
    windows = shown[0]["windows"]
    assert len(windows) == 718 and [w["window_index"] for w in windows[99:101]] == [99, 102]
    assert windows[5]["probability"] == pytest.approx(made["windows"][5]["predicted_probability"])

    page = (out / "report.html").read_text()
    assert page.index("<h2 id=timelines>Timelines</h2>") < page.index("<h2>Failures</h2>")
    text = re.sub(r'src="data:[^"]*"', "", page)  # base64 charts can spell anything
    assert "<h2>Accuracy</h2>" not in page and "tiny" not in text
    for t in shown:
        png = (out / t["chart"]).read_bytes()
        name = t["chart"][:-4]
        assert f'id="chart-{name}" alt="Timeline of {t["clip_id"]}" src="data:image/png;base64,' \
               f'{base64.b64encode(png).decode()}"' in page
        for s in made["timelines"][t["clip_id"]]["segments"]:
            assert (f'<td class="n">{clock(s["start_sec"])}</td><td class="n">'
                    f'{clock(s["end_sec"])}</td><td>{s["label"]}</td>'
                    f'<td class="n">{s["mean_probability"]:.2f}</td>') in page
    image = png_pixels((out / "timeline_1_lecture.png").read_bytes())
    assert image.shape == (380, 1000, 3)
    counts = [colour_pixels(image, c).sum() for c in TIMELINE_COLOURS]
    assert min(counts) > 1500, counts   # 9 labels in colour, 10 minutes each
    # By time covered: the label of the failed windows covers 20 s less, so is grey.
    assert shown[0]["colours"] == dict(zip([l for l in twelve if l != twelve[1]][:9],
                                           TIMELINE_COLOURS))
    assert colour_pixels(image, OTHER_LABELS).sum() > 3 * 1500   # the other 3 in grey
    # The short video: C covers 40 s, D 20 s; in the segment strip C's share is 4/6.
    image = png_pixels((out / "timeline_3_short.png").read_bytes())
    c, d = band_columns(image, *(shown[2]["colours"][label] for label in (C, D)))
    assert c.size / (c.size + d.size) == pytest.approx(4 / 6, abs=0.01)
    assert c.min() < d.min() < d.max() < c.max()   # C, D, C


def test_video_chooses_one_timeline_and_an_unknown_one_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    windowed_dataset(run, {"lecture": [A] * 20, "mid": [A] * 10 + [B] * 5, "tiny": [B, B]})
    out = tmp_path / "out"
    assert cli.main(["report", str(run), "--out", str(out), "--video", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"beam-i3d report for {run}\n")
    assert "\ntiny (gs://videos/tiny.mp4): 0:00.0-0:20.0" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [t["clip_id"] for t in summary["timelines"]["shown"]] == ["tiny"]
    assert summary["timelines"]["chosen_by"] == "--video tiny"
    assert sorted(p.name for p in out.glob("timeline_*.png")) == ["timeline_1_tiny.png"]
    page = (out / "report.html").read_text()
    assert 'id="chart-timeline_1_tiny"' in page and "lecture" not in page
    # By video URI too.
    assert cli.main(["report", str(run), "--out", str(tmp_path / "o2"), "--video",
                     "gs://videos/mid.mp4"]) == 0
    assert "\nmid (gs://videos/mid.mp4): " in capsys.readouterr().out

    assert cli.main(["report", str(run), "--out", str(tmp_path / "o3"), "--video",
                     "nope"]) == 1
    err = capsys.readouterr().err
    assert "--video 'nope': no timeline of that clip_id, row_key or video URI in" in err
    assert "it has 3: lecture, mid, tiny" in err
    assert not (tmp_path / "o3").exists()


@pytest.mark.parametrize("fps, frames, windows, said", [
    ("native", 16, 2, "16-frame windows, stride 16 frames, at 29.97 fps (the video's own)"),
    ("10", 4, 3, "4-frame windows, stride 4 frames, at 10 fps"),
])
def test_frame_windows_last_their_frames_at_the_rate_used(tmp_path, capsys, fps, frames,
                                                          windows, said):
    """Real runs of ``--window-frames W --fps native|N`` on a 29.97-fps video of 40 frames
    (1.33 s): each window in the report lasts its W frames at the rate used, as its row's
    own start and end say: 16 / 29.97 = 0.534 s at ``--fps native``, 4 / 10 = 0.4 s at
    ``--fps 10`` (not W / 25 s: 0.64 s, 0.16 s); the report says the rate used."""
    from fractions import Fraction

    from test_pipeline import moving_texture

    ntsc = Fraction(30000, 1001)
    rate = ntsc if fps == "native" else Fraction(int(fps))
    video = moving_texture(tmp_path / "ntsc.mp4", 40, rate=ntsc, size=(48, 64))
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"clip_id,video_uri\nntsc,{video}\n")
    run = tmp_path / "run"
    assert cli.main(["score", "--manifest", str(manifest), "--output", str(run),
                     "--window-frames", str(frames), "--fps", fps, "--quiet"]) == 0
    out = tmp_path / "out"
    assert cli.main(["report", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["timelines"]["shown"][0]
    assert [w["window_index"] for w in entry["windows"]] == list(range(windows))
    for k, w in enumerate(entry["windows"]):
        assert w["start_sec"] == pytest.approx(float(frames * k / rate), abs=1e-6)
        assert w["end_sec"] == pytest.approx(float(frames * (k + 1) / rate), abs=1e-6)
    assert entry["end_sec"] == pytest.approx(float(frames * windows / rate), abs=1e-6)
    assert max(s["end_sec"] for s in entry["segments"]) == pytest.approx(entry["end_sec"])
    assert entry["fps"] == pytest.approx(float(rate))
    assert (entry["window_frames"], entry["stride_frames"]) == (frames, frames)
    assert said in printed
    assert said.replace("'", "&#x27;") in (out / "report.html").read_text()


def test_video_on_a_run_without_timelines_is_an_error(known_run, tmp_path, capsys):
    assert cli.main(["report", str(known_run), "--out", str(tmp_path / "o"), "--video",
                     "a1"]) == 1
    assert "holds no timelines; --video applies to the output of a windowed run" in \
        capsys.readouterr().err
    summary = build_report(str(known_run), str(tmp_path / "o"))
    assert "timelines" not in summary and "windows" not in summary
    assert "Timelines" not in (tmp_path / "o" / "report.html").read_text()


# --- Remote ----------------------------------------------------------------------------


def test_report_on_gcs_matches_local(gcs_emulator, known_run, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    for sub in ("scores", "errors"):
        for path in sorted((known_run / sub).iterdir()):
            upload(path, f"gs://test-bucket/run1/{sub}/{path.name}")
    upload(known_run / "scores" / "part-00000-of-00004.parquet",
           "gs://test-bucket/run1/scores/nested/ignored.parquet")   # not a part of scores/
    remote = build_report("gs://test-bucket/run1", "gs://test-bucket/run1/report")
    local = compute_summary(str(known_run))
    for key in ("scores", "errors", "metadata", "metadata_disagreements", "warnings"):
        assert remote[key] == local[key], key
    written = {Path(m.path).name for m in
               FileSystems.match(["gs://test-bucket/run1/report/*"])[0].metadata_list}
    assert written == {"report.html", "summary.json", *(f"{n}.png" for n in CHARTS)}
    with pytest.raises(ReportError, match="gs://test-bucket/no-such-run does not exist"):
        compute_summary("gs://test-bucket/no-such-run")


# --- Rendering in a browser ------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed; the report's rendering test needs it. Install "
                "Debian's package: sudo apt-get install -y --no-install-recommends chromium "
                "(scripts/bootstrap.sh and .ci/run do this when run as root).")


def test_html_renders_in_headless_chromium(known_run, tmp_path):
    from PIL import Image

    build_report(str(known_run), str(tmp_path / "out"))
    shot = tmp_path / "screenshot.png"
    command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
               "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
               f"--screenshot={shot}", "--window-size=1280,2000",
               (tmp_path / "out" / "report.html").as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), f"no screenshot (rc {result.returncode}): {result.stderr[-2000:]}"
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2000, 1280)
    not_white = (image < 245).any(axis=2).mean()
    assert not_white > 0.02, f"screenshot nearly blank ({not_white:.3%} non-white pixels)"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    # the failures chart is drawn in the decode stage's orange (#ff7f0e): the embedded
    # PNGs were decoded, not just the text laid out
    orange = (np.abs(image.astype(int) - [255, 127, 14]).sum(axis=2) < 30).sum()
    assert orange > 1000, f"no chart pixels in the screenshot ({orange})"
