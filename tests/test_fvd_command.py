"""``beam-i3d fvd`` end to end: the black/white reference figure from encoded files,
statistics reuse, refusals and reconciliation. One pipeline run (4 clips of 30 frames
through the default weights on the CPU, ~20 s); the rest reads statistics only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, main

# The published figure for a 30-frame all-black vs all-white 224x224 set, computed with
# TF-Hub's i3d-kinetics-400 module (equal clips: both covariances are 0, so the FVD is
# the squared distance of the mean logits).
PUBLISHED_BLACK_WHITE = 151.39244


@pytest.fixture(scope="module")
def black_white_run(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("fvd")
    np.save(root / "black.npy", np.zeros((30, 224, 224, 3), np.uint8))
    np.savez_compressed(root / "black2.npz", frames=np.zeros((34, 224, 224, 3), np.uint8))
    white = root / "white_png"
    white.mkdir()
    for i in range(30):
        cv2.imwrite(str(white / f"{i:03d}.png"), np.full((224, 224, 3), 255, np.uint8))
    np.save(root / "white.npy", np.full((30, 224, 224, 3), 255, np.uint8))
    np.save(root / "short.npy", np.full((12, 224, 224, 3), 255, np.uint8))
    (root / "real.csv").write_text(f"video_uri\n{root}/black.npy\n{root}/black2.npz\n")
    (root / "fake.csv").write_text(
        f"video_uri\n{root}/white_png\n{root}/white.npy\n{root}/short.npy\n"
        f"{root}/missing.npy\n")
    out = root / "out"
    status = main(["fvd", "--real", str(root / "real.csv"), "--fake", str(root / "fake.csv"),
                   "--output", str(out), "--frames", "30"])
    return root, out, status


def test_black_white_figure(black_white_run, capsys):
    root, out, status = black_white_run
    assert status == EXIT_OK
    record = json.loads((out / "fvd.json").read_text())
    for key in ("fvd", "n_real", "n_fake", "protocol", "frames", "weights", "features"):
        assert key in record
    print(f"black/white FVD: {record['fvd']:.5f} (published {PUBLISHED_BLACK_WHITE})")
    assert record["fvd"] == pytest.approx(PUBLISHED_BLACK_WHITE, abs=0.01)
    assert (record["n_real"], record["n_fake"]) == (2, 2)
    assert (record["protocol"], record["frames"], record["weights"]) == (
        "original", 30, "rgb_scratch")
    assert record["counts"]["fake"] == {"manifest_rows": 4, "counted": 2, "failed": 2,
                                        "not_selected": 0,
                                        "error_types": {"TooFewFrames": 1,
                                                        "VideoNotFound": 1}}


def test_outcomes_reconcile(black_white_run):
    import pandas as pd

    _, out, _ = black_white_run
    clips = pd.read_parquet(out / "clips")
    errors = pd.read_parquet(out / "errors")
    assert sorted(clips.groupby("side").size().items()) == [("fake", 2), ("real", 2)]
    assert set(errors.side) == {"fake"} and len(errors) == 2
    assert not set(clips.row_key) & set(errors.row_key)
    with np.load(out / "stats" / "fake.npz") as z:
        assert int(z["n"]) == 2 and str(z["protocol"]) == "original" and int(z["frames"]) == 30


def test_statistics_reused(black_white_run, tmp_path):
    root, out, _ = black_white_run
    first = json.loads((out / "fvd.json").read_text())["fvd"]
    again = tmp_path / "again"
    status = main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                   str(out / "stats" / "fake.npz"), "--output", str(again), "--frames", "30"])
    assert status == EXIT_OK
    assert json.loads((again / "fvd.json").read_text())["fvd"] == first


@pytest.mark.parametrize("field, value, named", [
    ("frames", 16, "frames"),
    # bf16 numbers never mix with f32 ones (issue #22)
    ("precision", "bf16", "precision 'f32' vs 'bf16'"),
])
def test_mismatched_statistics_refused(black_white_run, tmp_path, capsys, field, value, named):
    _, out, _ = black_white_run
    from beam_i3d.fvd.stats_files import load_npz, save_npz

    other = load_npz((out / "stats" / "fake.npz").read_bytes())
    setattr(other, field, value)
    save_npz(other, str(tmp_path / "fake_other.npz"))
    capsys.readouterr()
    status = main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                   str(tmp_path / "fake_other.npz"), "--output", str(tmp_path / "o")])
    assert status == EXIT_CONFIGURATION
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to compare" in err[0] and named in err[0]
    assert not (tmp_path / "o").exists()


def test_output_not_reused(black_white_run, capsys):
    _, out, _ = black_white_run
    status = main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                   str(out / "stats" / "fake.npz"), "--output", str(out), "--frames", "30"])
    assert status == EXIT_CONFIGURATION
    assert "--overwrite" in capsys.readouterr().err


def test_one_clip_set_refused(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((16, 32, 32, 3), np.uint8))
    (tmp_path / "one.csv").write_text(f"video_uri\n{tmp_path}/a.npy\n")
    status = main(["fvd", "--real", str(tmp_path / "one.csv"), "--fake",
                   str(tmp_path / "one.csv"), "--output", str(tmp_path / "o"), "--dry-run"])
    assert status == EXIT_CONFIGURATION
    assert "at least 2 clips" in capsys.readouterr().err


@pytest.mark.parametrize("frames", ["8", "0", "x"])
def test_frames_checked(frames, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["fvd", "--real", "a.csv", "--fake", "b.csv", "--output", str(tmp_path),
              "--frames", frames])
    assert info.value.code == 2


def test_reference_statistics_only(tmp_path, capsys):
    for i in range(2):
        np.save(tmp_path / f"c{i}.npy",
                np.random.default_rng(i).integers(0, 256, (9, 32, 40, 3), dtype=np.uint8))
    (tmp_path / "ref.csv").write_text(f"video_uri\n{tmp_path}/c0.npy\n{tmp_path}/c1.npy\n")
    out = tmp_path / "ref"
    assert main(["fvd", "--real", str(tmp_path / "ref.csv"), "--output", str(out),
                 "--frames", "9"]) == EXIT_OK
    record = json.loads((out / "fvd.json").read_text())
    assert record["fvd"] is None and record["n_real"] == 2 and record["frames"] == 9
    assert (out / "stats" / "real.npz").is_file() and not (out / "stats" / "fake.npz").exists()
    # ... and reused: against itself, the FVD is 0.
    assert main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                 str(out / "stats" / "real.npz"), "--output", str(tmp_path / "self"),
                 "--frames", "9"]) == EXIT_OK
    assert json.loads((tmp_path / "self" / "fvd.json").read_text())["fvd"] < 1e-6
