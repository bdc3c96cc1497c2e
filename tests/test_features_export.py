"""``beam-i3d features``: one array per manifest row from real score runs (real encoded
videos, the DirectRunner), its index, file names for any clip_id, gaps, formats."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, strategies as st

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, main
from beam_i3d.features.arrays import (MAX_STEM, assemble, clip_id_of_stem, collect,
                                      file_stem)
from test_pipeline import moving_texture, write_manifest

UNSAFE_ID = "cam 1/../take:2?é"


# --- File names (pure) -------------------------------------------------------------------


@given(st.text(min_size=1, max_size=60))
def test_file_stems_are_safe_and_reversible(clip_id):
    stem = file_stem(clip_id)
    assert len(stem) <= MAX_STEM
    if "~" in stem:  # too long: cut, with a digest; only the index maps it back
        assert len(clip_id.encode("utf-8")) * 3 > MAX_STEM and clip_id_of_stem(stem) is None
    else:
        assert clip_id_of_stem(stem) == clip_id
    assert set(stem) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "0123456789-_.%~")
    assert not stem.startswith(".") and stem not in ("", ".", "..")


def test_long_ids_are_cut_with_a_digest_and_stay_distinct():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(file_stem(a)) <= MAX_STEM and file_stem(a) != file_stem(b)
    assert clip_id_of_stem(file_stem(a)) is None  # the index maps it back
    # A cut never splits an escape.
    cut = file_stem("é" * 200)
    assert "~" in cut and cut.split("~")[0].count("%") * 3 == len(cut.split("~")[0])


# --- Assembling a row (pure) ------------------------------------------------------------


def window(k: int, run: str, value: float) -> tuple[str, dict]:
    return "score", {"row_key": f"R@w{k}", "clip_id": "c", "video_uri": "v", "run_id": run,
                     "window_start_sec": float(k), "window_end_sec": k + 1.0,
                     "rgb_embedding": [value] * 1024, "flow_embedding": [-value] * 1024}


def test_a_row_takes_each_windows_latest_score_over_its_errors():
    entries = [("plan", {"row_key": "R", "num_windows": 3, "run_id": "1"}),
               window(0, "1", 1.0), window(1, "1", 2.0), window(1, "2", 3.0),
               ("error", {"row_key": "R@w2", "run_id": "1", "error_type": "DecodeTimeout",
                          "message": "slow"}),
               window(2, "2", 4.0)]
    done = assemble(collect("R", entries, windowed=True), ("rgb", "flow"), windowed=True)
    assert done.index["status"] == "written"
    assert done.features.shape == (3, 2048) and done.features.dtype == np.float32
    assert done.features[:, 0].tolist() == [1.0, 3.0, 4.0]       # RGB first
    assert done.features[:, 1024].tolist() == [-1.0, -3.0, -4.0]  # then flow
    assert done.index["window_start_sec"] == [0.0, 1.0, 2.0]


def test_a_row_with_a_missing_window_is_named_or_written_with_nan():
    entries = [("plan", {"row_key": "R", "num_windows": 3, "run_id": "1"}),
               window(0, "1", 1.0), window(2, "1", 3.0),
               ("error", {"row_key": "R@w1", "run_id": "1", "error_type": "CorruptVideo",
                          "message": "bad packet"})]
    parts = collect("R", entries, windowed=True)
    held = assemble(parts, ("rgb",), windowed=True)
    assert held.features is None and held.index["status"] == "gaps"
    assert held.index["missing_windows"] == [1] and "window 1 (CorruptVideo)" in \
        held.index["error"]
    gappy = assemble(parts, ("rgb",), windowed=True, allow_gaps=True)
    assert gappy.index["status"] == "written_with_gaps"
    assert np.isnan(gappy.features[1]).all() and not np.isnan(gappy.features[[0, 2]]).any()
    assert math.isnan(gappy.index["window_start_sec"][1])


def test_a_row_without_windows_is_failed_with_its_error():
    entries = [("error", {"row_key": "R", "clip_id": "c", "run_id": "1",
                          "error_type": "VideoNotFound", "message": "v: no such file"})]
    done = assemble(collect("R", entries, windowed=True), ("rgb",), windowed=True)
    assert done.features is None and done.index["status"] == "failed"
    assert done.index["error"] == "VideoNotFound: v: no such file"


# --- The command on real runs --------------------------------------------------------------


@pytest.fixture(scope="module")
def windowed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    videos = [moving_texture(root / "a.mp4", 75), moving_texture(root / "b.mp4", 40, seed=1)]
    manifest = write_manifest(root / "m.csv", [
        {"clip_id": UNSAFE_ID, "video_uri": videos[0]},
        {"clip_id": "short", "video_uri": videos[1]},
        {"clip_id": "gone", "video_uri": str(root / "absent.mp4")}])
    out = root / "run"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window", "1",
                 "--shard-rows", "1", "--quiet"]) == EXIT_OK
    return root, manifest, out


def windows_by_clip(out: Path) -> dict[str, list[dict]]:
    rows = [r for f in sorted(glob.glob(str(out / "windows" / "*.parquet")))
            for r in pq.read_table(f).to_pylist()]
    by_clip: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["window_index"]):
        by_clip.setdefault(r["clip_id"], []).append(r)
    return by_clip


def test_features_of_a_windowed_run(windowed_run, tmp_path, capsys):
    _, _, run = windowed_run
    out = tmp_path / "feats"
    assert main(["features", str(run), "--out", str(out)]) == EXIT_OK
    index = {r["clip_id"]: r for r in pq.read_table(out / "index.parquet").to_pylist()}
    assert set(index) == {UNSAFE_ID, "short", "gone"}
    windows = windows_by_clip(run)
    for clip_id in (UNSAFE_ID, "short"):
        entry = index[clip_id]
        assert entry["status"] == "written" and entry["file"] == file_stem(clip_id) + ".npy"
        array = np.load(out / entry["file"])
        expected = np.array([w["rgb_embedding"] for w in windows[clip_id]], np.float32)
        assert array.dtype == np.float32 and array.shape == (len(windows[clip_id]), 1024)
        np.testing.assert_array_equal(array, expected)
        assert entry["num_windows"] == len(expected) and entry["feature_dim"] == 1024
        assert entry["window_start_sec"] == [w["window_start_sec"] for w in windows[clip_id]]
        assert (entry["fps"], entry["window_sec"], entry["streams"]) == (25.0, 1.0, "rgb")
        assert entry["weights"] == "rgb:rgb_scratch"
    assert index[UNSAFE_ID]["num_windows"] == 3 and index["short"]["num_windows"] == 2
    assert index["gone"]["status"] == "failed" and index["gone"]["file"] is None
    assert index["gone"]["error"].startswith("VideoNotFound")
    assert sorted(os.listdir(out)) == sorted(
        ["index.parquet", "recipe.json", file_stem(UNSAFE_ID) + ".npy", "short.npy"])
    assert "3 manifest rows: 1 failed, 2 written" in capsys.readouterr().err
    # It never overwrites.
    assert main(["features", str(run), "--out", str(out)]) == EXIT_CONFIGURATION


def test_a_lost_window_is_a_gap(windowed_run, tmp_path):
    import shutil

    _, _, run = windowed_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    lost = [f for f in glob.glob(str(copy / "windows" / "*.parquet"))
            if pq.read_table(f).column("row_key").to_pylist()[0].endswith("@w1")
            and pq.read_table(f).column("clip_id").to_pylist()[0] == "short"]
    assert len(lost) == 1
    os.remove(lost[0])
    held = tmp_path / "held"
    assert main(["features", str(copy), "--out", str(held)]) == EXIT_OK
    index = {r["clip_id"]: r for r in pq.read_table(held / "index.parquet").to_pylist()}
    assert index["short"]["status"] == "gaps" and index["short"]["file"] is None
    assert index["short"]["missing_windows"] == [1]
    assert not (held / "short.npy").exists()
    gappy = tmp_path / "gappy"
    assert main(["features", str(copy), "--out", str(gappy), "--allow-gaps",
                 "--format", "npz"]) == EXIT_OK
    data = np.load(gappy / "short.npz")
    assert data["features"].shape == (2, 1024) and np.isnan(data["features"][1]).all()
    assert data["window_start_sec"][0] == 0.0 and np.isnan(data["window_start_sec"][1])


def test_a_clip_run_gives_one_line_per_row_and_hdf5(windowed_run, tmp_path):
    import h5py

    root, manifest, _ = windowed_run
    run = tmp_path / "clips"
    assert main(["score", "--manifest", manifest, "--output", str(run), "--quiet"]) == EXIT_OK
    out = tmp_path / "feats"
    assert main(["features", str(run), "--out", str(out), "--format", "hdf5"]) == EXIT_OK
    scores = {r["clip_id"]: r for f in glob.glob(str(run / "scores" / "*.parquet"))
              for r in pq.read_table(f).to_pylist()}
    with h5py.File(out / "short.h5") as h5:
        assert h5["features"].shape == (1, 1024) and h5.attrs["clip_id"] == "short"
        np.testing.assert_array_equal(h5["features"][0],
                                      np.float32(scores["short"]["rgb_embedding"]))
    index = {r["clip_id"]: r for r in pq.read_table(out / "index.parquet").to_pylist()}
    assert index["short"]["window_sec"] is None and index["short"]["num_windows"] == 1


def test_what_features_refuses(windowed_run, tmp_path, capsys):
    root, manifest, _ = windowed_run
    bare = tmp_path / "bare"
    assert main(["score", "--manifest", manifest, "--output", str(bare), "--quiet",
                 "--no-embeddings"]) == EXIT_OK
    capsys.readouterr()
    assert main(["features", str(bare), "--out", str(tmp_path / "f")]) == EXIT_CONFIGURATION
    assert "--no-embeddings" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "g")]) == EXIT_CONFIGURATION
    with pytest.raises(SystemExit) as e:
        main(["features", str(bare), "--out", str(tmp_path / "h"), "--format", "csv"])
    assert e.value.code == 2


def test_features_from_and_to_gcs(windowed_run, gcs_emulator):
    from apache_beam.io.filesystems import FileSystems

    from beam_i3d import fileio

    _, _, run = windowed_run
    remote = "gs://test-bucket/features/run"
    fileio.upload_tree(str(run), remote)
    out = "gs://test-bucket/features/out"
    assert main(["features", remote, "--out", out]) == EXIT_OK
    with FileSystems.open(out + "/index.parquet") as f:
        index = {r["clip_id"]: r for r in pq.read_table(f).to_pylist()}
    assert index["short"]["status"] == "written"
    with FileSystems.open(out + "/short.npy") as f:
        import io
        array = np.load(io.BytesIO(f.read()))
    assert array.shape == (2, 1024)
    assert not FileSystems.match([out + "/.index-parts/**"])[0].metadata_list
