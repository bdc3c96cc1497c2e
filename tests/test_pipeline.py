"""`beam-i3d score` end to end on the DirectRunner, with real encoded videos."""

from __future__ import annotations

import csv
import glob
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import main
from model.labels import label_map
from schemas import ERRORS_SCHEMA, SCORES_SCHEMA, read_run_metadata
from video_factory import textured_image, write_video

SAMPLE = Path(__file__).parent.parent / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"
MULTIPROCESS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def moving_texture(path, frames, rate=25, size=(96, 128), seed=0):
    """A textured image panning right 2 px a frame: real H.264 with motion."""
    h, w = size
    gray = textured_image(h, w + 2 * frames, seed=seed)
    texture = np.stack([gray, 255 - gray, gray // 2 + 64], axis=-1)
    return write_video(str(path), lambda k: texture[:, 2 * k:2 * k + w],
                       num_frames=frames, rate=rate)


def write_manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip_id", "video_uri", "start_sec", "end_sec",
                                               "label"])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return str(path)


def read_dataset(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.parquet")))
    tables = [pq.read_table(f) for f in files]
    rows = [r for t in tables for r in t.to_pylist()]
    return files, rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    good = moving_texture(d / "good.mp4", 20)
    good2 = moving_texture(d / "good2.mp4", 40, rate=30, seed=1)
    text = d / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    whole = Path(moving_texture(d / "whole.mp4", 30, seed=2)).read_bytes()
    truncated = d / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 3])
    rows = [
        {"clip_id": "a", "video_uri": good, "label": "abseiling"},
        {"clip_id": "b", "video_uri": good2, "start_sec": "0.2", "end_sec": "1.2"},
        {"clip_id": "cricket", "video_uri": str(SAMPLE), "label": "playing cricket"},
        {"clip_id": "missing", "video_uri": str(d / "missing.mp4")},
        {"clip_id": "text", "video_uri": str(text)},
        {"clip_id": "truncated", "video_uri": str(truncated)},
        {"clip_id": "inverted", "video_uri": good, "start_sec": "1.0", "end_sec": "0.5"},
        {"clip_id": "a", "video_uri": good2},  # repeats clip a
        {"clip_id": "", "video_uri": "", "label": "no uri"},
    ]
    return d, rows


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    d, rows = corpus
    manifest = write_manifest(d / "manifest.csv", rows)
    out = tmp_path_factory.mktemp("out")
    # Two worker processes sharing two model copies (Beam's multi_process_shared), as on
    # a machine with two GPUs.
    code = main(["score", "--manifest", manifest, "--output", str(out), "--batch-size", "3",
                 "--model-copies", "2", "--quiet", *MULTIPROCESS])
    assert code == 0
    return manifest, out


def test_every_row_ends_in_scores_or_errors(first_run):
    manifest, out = first_run
    _, scores = read_dataset(out / "scores")
    _, errors = read_dataset(out / "errors")
    assert sorted(r["clip_id"] for r in scores) == ["a", "b", "cricket"]
    assert sorted(r["row_key"] for r in scores) == ["a", "b", "cricket"]
    by_key = {e["row_key"]: e for e in errors}
    assert len(errors) == 6 == len(by_key)
    no_uri = next(k for k in by_key if k.startswith("manifest-row:"))
    expected = {
        "missing": ("missing", "decode", "VideoNotFound"),
        "text": ("text", "decode", "NotAVideo"),
        "truncated": ("truncated", "decode", "CorruptVideo"),
        "inverted": ("inverted", "manifest", "ManifestError"),
        "a#repeat1": ("a", "manifest", "DuplicateClip"),
        no_uri: (None, "manifest", "ManifestError"),
    }
    for key, (clip_id, stage, error_type) in expected.items():
        e = by_key[key]
        assert (e["clip_id"], e["stage"], e["error_type"]) == (clip_id, stage, error_type), e
        assert e["source"].startswith(f"{manifest}:"), e
        if stage == "decode":
            assert e["video_uri"] in e["message"]
    assert "not after start" in by_key["inverted"]["message"]
    first_a = next(r for r in scores if r["clip_id"] == "a")
    assert first_a["video_uri"].endswith("good.mp4")  # the first row of clip a is scored
    assert by_key["a#repeat1"]["video_uri"].endswith("good2.mp4")
    assert len({r["run_id"] for r in scores + errors}) == 1
    from beam_i3d.cli import main as cli_main

    assert cli_main(["verify", "--manifest", manifest, "--output", str(out)]) == 0


def test_output_schema_and_metadata(first_run):
    _, out = first_run
    for name, schema in (("scores", SCORES_SCHEMA), ("errors", ERRORS_SCHEMA)):
        files, _ = read_dataset(out / name)
        assert files
        for f in files:
            file_schema = pq.read_schema(f)
            assert file_schema.remove_metadata().equals(schema), f
            meta = read_run_metadata(file_schema)
            assert meta["streams"] == "rgb" and meta["label_map"] == "kinetics-400"
            assert '"rgb": "default"' in meta["checkpoints"]
            assert '"fps": 25' in meta["recipe"] and meta["schema_version"] == "5"


def test_scores_content(first_run):
    _, out = first_run
    _, scores = read_dataset(out / "scores")
    by_id = {r["clip_id"]: r for r in scores}
    cricket = by_id["cricket"]
    assert cricket["predicted_label"] == "playing cricket"
    assert cricket["label"] == "playing cricket" and cricket["num_frames"] == 79
    assert cricket["top_k"][0]["label"] == "playing cricket" and len(cricket["top_k"]) == 5
    probabilities = [t["probability"] for t in cricket["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    for row in scores:  # top-k, top-1 and probabilities follow from the logits
        logits = np.asarray(row["logits"], np.float64)
        softmax = np.exp(logits - logits.max())
        softmax /= softmax.sum()
        best = np.argsort(-logits, kind="stable")[:5]
        assert [t["index"] for t in row["top_k"]] == best.tolist()
        for t in row["top_k"]:
            assert t["logit"] == pytest.approx(logits[t["index"]], abs=1e-6)
            assert t["probability"] == pytest.approx(softmax[t["index"]], abs=1e-5)
        assert row["predicted_index"] == best[0]
        assert row["predicted_probability"] == pytest.approx(softmax[best[0]], abs=1e-5)
    assert len(cricket["logits"]) == 400 and len(cricket["rgb_embedding"]) == 1024
    np.testing.assert_allclose(cricket["logits"], cricket["rgb_logits"])
    assert cricket["flow_logits"] is None and cricket["flow_embedding"] is None
    assert by_id["a"]["num_frames"] == 20
    assert by_id["b"]["num_frames"] == 25 and (by_id["b"]["start_sec"], by_id["b"]["end_sec"]) == (
        0.2, 1.2)


def test_skip_existing_resumes(first_run, corpus):
    manifest, out = first_run
    d, rows = corpus
    new_video = moving_texture(d / "new.mp4", 12, seed=3)
    extended = write_manifest(d / "manifest.csv", rows + [{"clip_id": "new", "video_uri": new_video}])
    before_scores, _ = read_dataset(out / "scores")
    before_errors, _ = read_dataset(out / "errors")
    assert extended == manifest
    assert main(["score", "--manifest", manifest, "--output", str(out), "--skip-existing",
                 "--quiet"]) == 0
    after_scores, scores = read_dataset(out / "scores")
    after_errors, errors = read_dataset(out / "errors")
    assert set(before_scores) < set(after_scores)  # new part files beside the old
    assert sorted(r["clip_id"] for r in scores) == ["a", "b", "cricket", "new"]
    assert len(errors) == 6  # nothing reported twice
    assert set(before_errors) <= set(after_errors)


def test_gcs_end_to_end_with_progress(gcs_emulator, corpus, tmp_path):
    """Manifest and videos in a bucket of the GCS emulator, output to gs://, the command
    run as a user runs it; the progress line counts up to every row."""
    import json
    import subprocess
    import sys

    from apache_beam.io.filesystems import FileSystems

    from conftest import upload

    d, _ = corpus
    for name in ("good.mp4", "good2.mp4", "notes.mp4"):
        upload(d / name, f"gs://test-bucket/videos/{name}")
    rows = [{"video_uri": "gs://test-bucket/videos/good.mp4", "label": "abseiling"},
            {"video": "gs://test-bucket/videos/good2.mp4", "start": 0.0, "end": 1.0},
            {"path": "gs://test-bucket/videos/notes.mp4"},
            {"video_uri": "gs://test-bucket/videos/absent.mp4"}]
    local_manifest = tmp_path / "m.jsonl"
    local_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    upload(local_manifest, "gs://test-bucket/manifests/m.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "beam_i3d", "score", "--manifest", "gs://test-bucket/manifests/*.jsonl",
         "--output", "gs://test-bucket/runs/r1", "--no-embeddings"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BEAM_I3D_PROGRESS_SECONDS": "0.5"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [l for l in done.stderr.splitlines() if l.startswith("[beam-i3d]")]
    # How many periodic lines come before the final one depends on the machine's speed
    # (test_progress.py checks the printer itself); the final line always comes.
    assert len(lines) >= 1, done.stderr[-3000:]
    counts = [int(l.split()[1].split("/")[0].replace(",", "")) for l in lines]
    assert counts == sorted(counts)  # never goes backwards
    assert lines[-1].startswith("[beam-i3d] 4/4 rows (100%), 2 failed")

    def read(dataset):
        files = [m.path for m in FileSystems.match(
            [f"gs://test-bucket/runs/r1/{dataset}/*.parquet"])[0].metadata_list]
        assert files
        rows = []
        for path in files:
            with FileSystems.open(path) as f:
                rows += pq.read_table(f).to_pylist()
        return rows

    scores, errors = read("scores"), read("errors")
    assert sorted(r["video_uri"] for r in scores) == ["gs://test-bucket/videos/good.mp4",
                                                     "gs://test-bucket/videos/good2.mp4"]
    assert all(r["rgb_embedding"] is None and len(r["rgb_logits"]) == 400 for r in scores)
    assert sorted((e["video_uri"], e["error_type"]) for e in errors) == [
        ("gs://test-bucket/videos/absent.mp4", "VideoNotFound"),
        ("gs://test-bucket/videos/notes.mp4", "NotAVideo")]


def test_readme_queries_run_on_the_output(first_run):
    """The manual's DuckDB example (docs/outputs.md) and its pandas reading work on a
    real run's output."""
    import re

    import duckdb
    import pandas as pd

    _, out = first_run
    readme = (Path(__file__).parent.parent / "docs" / "outputs.md").read_text()
    sql = re.search(r"<!-- duckdb-accuracy-per-label -->\s*```sql\n(.*?)```", readme, re.S)
    query = sql.group(1).replace("out/run1/scores", str(out / "scores"))
    rows = duckdb.sql(query).fetchall()
    _, scores = read_dataset(out / "scores")
    expected = []
    for label in sorted({r["label"] for r in scores if r["label"]}):
        mine = [r for r in scores if r["label"] == label]
        top1 = sum(r["predicted_label"] == label for r in mine) / len(mine)
        top5 = sum(label in [t["label"] for t in r["top_k"]] for r in mine) / len(mine)
        expected.append((label, len(mine), top1, top5))
    assert rows == sorted(expected, key=lambda r: (r[2], r[0]))
    assert ("playing cricket", 1, 1.0, 1.0) in rows and len(rows) == 2
    frame = pd.read_parquet(out / "scores", columns=["clip_id", "label", "predicted_label"])
    assert sorted(frame["clip_id"]) == sorted(r["clip_id"] for r in scores)
    assert {"a", "b", "cricket"} <= set(frame["clip_id"])
    assert len(pd.read_parquet(out / "errors")) == 6


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory):
    from conftest import release_layout, write_random_checkpoint

    d = tmp_path_factory.mktemp("flow_imagenet")
    write_random_checkpoint(release_layout("flow_imagenet"), str(d / "model.ckpt"), seed=5)
    return str(d)


@pytest.mark.parametrize("backend,quantize", [("tf", True), ("opencv", False)])
def test_two_streams_with_each_flow_backend(corpus, flow_checkpoint, tmp_path, backend,
                                            quantize):
    # The OpenCV run also sets --top-k (the rows must have 3, from the logits) and a
    # --max-batch-frames under the 29 frames of clips b and c, which then run as
    # separate forwards (the run must still settle every row).
    d, _ = corpus
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": "a", "video_uri": str(d / "good.mp4")},
        {"clip_id": "b", "video_uri": str(d / "good2.mp4"), "start_sec": "0.2", "end_sec": "0.8"},
        {"clip_id": "c", "video_uri": str(d / "good.mp4"), "start_sec": "0.0", "end_sec": "0.6"},
    ])
    out = tmp_path / "out"
    args = ["score", "--manifest", manifest, "--output", str(out), "--streams", "rgb,flow",
            "--flow-checkpoint", flow_checkpoint, "--flow-backend", backend, "--quiet"]
    top_k = 5 if quantize else 3
    if not quantize:
        args += ["--no-quantize-flow", "--top-k", "3", "--max-batch-frames", "20"]
    assert main(args) == 0
    files, scores = read_dataset(out / "scores")
    assert sorted(r["clip_id"] for r in scores) == ["a", "b", "c"]
    labels = label_map(400)
    for r in scores:
        assert len(r["flow_logits"]) == 400 and len(r["flow_embedding"]) == 1024
        np.testing.assert_allclose(r["logits"], np.add(r["rgb_logits"], r["flow_logits"]),
                                   rtol=1e-5, atol=1e-4)
        best = np.argsort(-np.asarray(r["logits"]), kind="stable")[:top_k]
        assert [t["label"] for t in r["top_k"]] == [labels[i] for i in best]
    meta = read_run_metadata(pq.read_schema(files[0]))
    assert meta["streams"] == "rgb,flow"
    import json

    recipe = json.loads(meta["recipe"])
    assert recipe["flow"]["backend"] == backend and recipe["flow"]["quantized"] is quantize
    assert json.loads(meta["checkpoints"])["flow"] == flow_checkpoint
    _, errors = read_dataset(out / "errors")
    assert errors == []


def test_flow_needs_a_checkpoint(corpus, tmp_path, capsys):
    d, _ = corpus
    manifest = write_manifest(tmp_path / "m.csv", [{"video_uri": str(d / "good.mp4")}])
    with pytest.raises(SystemExit, match="flow_imagenet or flow_scratch"):
        main(["score", "--manifest", manifest, "--output", str(tmp_path / "o"),
              "--streams", "flow"])
