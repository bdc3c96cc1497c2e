"""``beam-i3d fvd --protocol styleganv`` and ``--nonstandard`` through the command: the
first clips in manifest order, the clip starts, the biased covariance, what the outputs
record and what is refused. Two pipeline runs on tiny clips through the real model
(about 10 s each); the rest reads statistics or stops at the argument checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, main
from beam_i3d.fvd import clips
from beam_i3d.fvd.clips import ClipSpec


# --- The whole command -----------------------------------------------------------------------


def tiny_clip(seed, t):
    return np.random.default_rng(seed).integers(0, 256, (t, 32, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def styleganv_run(tmp_path_factory, monkeypatch_module):
    # A manifest larger than the subset: 6 rows, the protocol's max lowered to 3 (the
    # CLI's is 2048); row 1 is too short (12 < 16 frames), so the first 3 eligible rows
    # in manifest order are 0, 2, 3 for the real side; the fake side lists the same
    # files in reverse, so its first 3 eligible are 5, 4, 3.
    from beam_i3d.fvd import command

    monkeypatch_module.setattr(command, "STYLEGANV_CLIPS", 3)
    root = tmp_path_factory.mktemp("sg")
    paths = []
    for i in range(6):
        np.save(root / f"c{i}.npy", tiny_clip(i, 12 if i == 1 else 20 + i))
        paths.append(str(root / f"c{i}.npy"))
    (root / "real.csv").write_text("video_uri\n" + "\n".join(paths) + "\n")
    (root / "fake.csv").write_text("video_uri\n" + "\n".join(paths[::-1]) + "\n")
    out = root / "out"
    status = main(["fvd", "--real", str(root / "real.csv"), "--fake", str(root / "fake.csv"),
                   "--output", str(out), "--protocol", "styleganv", "--seed", "5"])
    return root, out, status, paths


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_styleganv_selects_first_eligible_in_manifest_order(styleganv_run):
    import pandas as pd

    _, out, status, paths = styleganv_run
    assert status == EXIT_OK
    counted = pd.read_parquet(out / "clips")
    errors = pd.read_parquet(out / "errors")
    taken = {side: sorted(counted[counted.side == side].video_uri) for side in ("real", "fake")}
    assert taken["real"] == sorted(paths[i] for i in (0, 2, 3))
    assert taken["fake"] == sorted(paths[i] for i in (3, 4, 5))
    for side, not_taken in (("real", (4, 5)), ("fake", (0, 2))):
        rows = errors[errors.side == side]
        assert sorted(rows[rows.error_type == "NotSelected"].video_uri) == sorted(
            paths[i] for i in not_taken)
        assert list(rows[rows.error_type == "TooFewFrames"].video_uri) == [paths[1]]
    record = json.loads((out / "fvd.json").read_text())
    assert record["counts"]["real"] == {"manifest_rows": 6, "counted": 3, "failed": 1,
                                        "not_selected": 2,
                                        "error_types": {"TooFewFrames": 1}}
    assert (record["n_real"], record["n_fake"], record["max_clips"]) == (3, 3, 3)


def test_error_rate_leaves_out_rows_not_selected():
    # --max-error-rate: 1 failure among the 4 rows tried is 25%, not 1 in 6.
    from beam_i3d.fvd.pipeline import SideCounts

    counts = SideCounts("real", manifest_rows=6, counted=3, failed=1, missing=[],
                        error_types={"TooFewFrames": 1}, not_selected=2)
    assert (counts.tried, counts.failure_rate) == (4, 0.25)
    assert SideCounts("real", 0, 0, 0, [], {}).failure_rate == 0.0


def test_styleganv_clip_starts(styleganv_run):
    # Real clips start at the seeded random frame of their row key, fake ones at 0.
    import pandas as pd

    _, out, _, paths = styleganv_run
    counted = pd.read_parquet(out / "clips")
    spec = ClipSpec(frames=16, start="random", seed=5)
    for row in counted.itertuples():
        if row.side == "fake":
            assert row.start_frame == 0
        else:
            total = 20 + paths.index(row.video_uri)
            assert row.start_frame == clips.clip_start(spec, total, row.row_key)


def test_styleganv_recorded_and_biased(styleganv_run):
    from beam_i3d.fvd.distance import frechet_distance

    _, out, _, _ = styleganv_run
    record = json.loads((out / "fvd.json").read_text())
    assert (record["protocol"], record["frames"], record["subsample"], record["resize"],
            record["covariance"], record["metric"]) == (
        "styleganv", 16, 1, "torch_linear", "biased", "fvd2048_16f")
    assert record["clip_start"] == {"real": "random (seed 5)", "fake": "first"}
    assert record["nonstandard"] is False and record["unverified"]
    stats = {}
    for side in ("real", "fake"):
        with np.load(out / "stats" / f"{side}.npz") as z:
            assert (str(z["protocol"]), int(z["subsample"]), str(z["resize"]),
                    str(z["covariance"])) == ("styleganv", 1, "torch_linear", "biased")
            n = int(z["n"])
            # sigma is the centred sum over n (StyleGAN-V's raw_cov/n - mu mu^T), not n-1
            np.testing.assert_allclose(z["sigma"], z["centred_sum"] / n, rtol=1e-12)
            np.testing.assert_allclose(z["sigma"], z["outer_sum"] / n
                                       - np.outer(z["mu"], z["mu"]), rtol=1e-6, atol=1e-6)
            stats[side] = (z["mu"], z["centred_sum"], n)
    (mr, cr, nr), (mf, cf, nf) = stats["real"], stats["fake"]
    biased = frechet_distance(mr, cr / nr, mf, cf / nf)
    unbiased = frechet_distance(mr, cr / (nr - 1), mf, cf / (nf - 1))
    assert record["fvd"] == pytest.approx(biased, rel=1e-9)
    assert abs(biased - unbiased) > 1e-3 * biased  # the choice shows in the figure


def test_styleganv_statistics_refused_against_original(styleganv_run, tmp_path, capsys):
    from beam_i3d.fvd.distance import Moments
    from beam_i3d.fvd.stats_files import FeatureSetStats, save_npz

    _, out, _, _ = styleganv_run
    rng = np.random.default_rng(0)
    original = FeatureSetStats(Moments.of(rng.normal(size=(4, 400))), protocol="original",
                               frames=16, weights="rgb_scratch", features="logits_mean",
                               covariance="unbiased")
    save_npz(original, str(tmp_path / "orig.npz"))
    capsys.readouterr()
    status = main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                   str(tmp_path / "orig.npz"), "--output", str(tmp_path / "o"),
                   "--protocol", "styleganv"])
    assert status == EXIT_CONFIGURATION
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to compare" in err[0]
    for field in ("protocol", "resize", "covariance"):
        assert field in err[0]
    # ... nor taken for what the command line does not say they are ...
    capsys.readouterr()
    assert main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                 str(out / "stats" / "real.npz"), "--output", str(tmp_path / "o2")]
                ) == EXIT_CONFIGURATION
    err = capsys.readouterr().err
    assert "the command line's options" in err and "protocol 'styleganv' vs 'original'" in err
    # ... and the styleganv statistics against themselves: 0.
    assert main(["fvd", "--real", str(out / "stats" / "real.npz"), "--fake",
                 str(out / "stats" / "real.npz"), "--output", str(tmp_path / "self"),
                 "--protocol", "styleganv"]) == EXIT_OK
    assert json.loads((tmp_path / "self" / "fvd.json").read_text())["fvd"] < 1e-6


# --- --nonstandard ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    ["--features", "mixed_5c"],
    ["--resize", "kinetics"],
    ["--resize", "torch"],  # styleganv's resize under the original protocol
    ["--checkpoint", "/nowhere/model.ckpt"],
    ["--subsample", "2"],  # the original protocol takes consecutive frames
    ["--protocol", "styleganv", "--frames", "32"],  # not one of StyleGAN-V's three
    ["--protocol", "styleganv", "--subsample", "4"],
])
def test_nonstandard_refused_without_the_flag(extra, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fvd", "--real", "a.csv", "--fake", "b.csv", "--output", str(tmp_path / "o"),
              *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nonstandard" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("standard", [
    ["--protocol", "styleganv", "--frames", "128"],
    ["--protocol", "styleganv", "--subsample", "8"],
    ["--protocol", "styleganv", "--resize", "torch"],
    ["--frames", "40"],  # the original protocol takes any N >= 9
])
def test_standard_variants_need_no_flag(standard):
    from beam_i3d.cli import build_parser

    from beam_i3d.fvd.command import check_arguments

    args = build_parser().parse_args(["fvd", "--real", "a", "--output", "o", *standard])
    assert check_arguments(args) == []


def test_seed_only_for_styleganv(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fvd", "--real", "a.csv", "--output", str(tmp_path), "--seed", "1"])
    assert info.value.code == 2 and "--seed" in capsys.readouterr().err


def test_weights_identity(tmp_path):
    # The default weights, wherever they lie, are rgb_scratch; other weights get a digest
    # of their tensors, the same at any path.
    import shutil

    from conftest import release_layout, write_random_checkpoint
    from model import default_weights
    from beam_i3d.fvd.command import weights_identity

    prefix = default_weights.default_checkpoint()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(prefix + suffix, str(tmp_path / ("copy.ckpt" + suffix)))
    assert weights_identity("default") == "rgb_scratch"
    assert weights_identity(str(tmp_path / "copy.ckpt")) == "rgb_scratch"
    layout = release_layout("rgb_scratch")
    write_random_checkpoint(layout, str(tmp_path / "rand.ckpt"), seed=1)
    write_random_checkpoint(layout, str(tmp_path / "other.ckpt"), seed=2)
    (tmp_path / "moved").mkdir()
    write_random_checkpoint(layout, str(tmp_path / "moved" / "rand.ckpt"), seed=1)
    ident = weights_identity(str(tmp_path / "rand.ckpt"))
    assert ident.startswith("tensors-sha256:") and ident != "rgb_scratch"
    assert weights_identity(str(tmp_path / "moved" / "rand.ckpt")) == ident
    assert weights_identity(str(tmp_path / "other.ckpt")) != ident


@pytest.fixture(scope="module")
def nonstandard_run(tmp_path_factory):
    from conftest import release_layout, write_random_checkpoint

    root = tmp_path_factory.mktemp("ns")
    write_random_checkpoint(release_layout("rgb_scratch"), str(root / "rand.ckpt"), seed=1)
    for i in range(4):
        np.save(root / f"c{i}.npy", tiny_clip(10 + i, 10))
    (root / "real.csv").write_text(f"video_uri\n{root}/c0.npy\n{root}/c1.npy\n")
    (root / "fake.csv").write_text(f"video_uri\n{root}/c2.npy\n{root}/c3.npy\n")
    out = root / "out"
    status = main(["fvd", "--real", str(root / "real.csv"), "--fake", str(root / "fake.csv"),
                   "--output", str(out), "--frames", "10", "--nonstandard",
                   "--features", "mixed_5c", "--resize", "kinetics",
                   "--checkpoint", str(root / "rand.ckpt")])
    return root, out, status


def test_nonstandard_recorded(nonstandard_run):
    from beam_i3d.fvd.command import weights_identity

    root, out, status = nonstandard_run
    assert status == EXIT_OK
    record = json.loads((out / "fvd.json").read_text())
    assert record["nonstandard"] is True
    assert len(record["deviations"]) == 3
    assert (record["features"], record["feature_dim"], record["resize"]) == (
        "mixed_5c", 1024, "kinetics_crop")
    assert record["weights"] == weights_identity(str(root / "rand.ckpt")) != "rgb_scratch"
    assert record["checkpoint"] == str(root / "rand.ckpt") and record["metric"] is None
    with np.load(out / "stats" / "real.npz") as z:
        assert (str(z["features"]), str(z["resize"]), str(z["weights"])) == (
            "mixed_5c", "kinetics_crop", record["weights"])
        assert z["mu"].shape == (1024,)


def test_nonstandard_statistics_refused_against_standard(nonstandard_run, tmp_path, capsys):
    from beam_i3d.fvd.distance import Moments
    from beam_i3d.fvd.stats_files import FeatureSetStats, save_npz

    _, out, _ = nonstandard_run
    standard = FeatureSetStats(Moments.of(np.random.default_rng(0).normal(size=(3, 1024))),
                               protocol="original", frames=10, weights="rgb_scratch",
                               features="logits_mean", covariance="unbiased")
    save_npz(standard, str(tmp_path / "std.npz"))
    capsys.readouterr()
    status = main(["fvd", "--real", str(tmp_path / "std.npz"), "--fake",
                   str(out / "stats" / "fake.npz"), "--output", str(tmp_path / "o"),
                   "--frames", "10"])
    assert status == EXIT_CONFIGURATION
    err = capsys.readouterr().err
    for field in ("features", "resize", "weights"):
        assert field in err
