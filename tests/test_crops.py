"""``score --crops center|five|ten``: the crops' geometry and order against direct numpy
slices of the resized frame, the mirrored flow (u negated before quantisation), and
real runs (real encoded videos, the DirectRunner, the default weights): per-crop
embeddings, logits the mean over crops, ``center`` unchanged, the features export's
``[T, crops, D]`` and a resume with other crops refused."""

from __future__ import annotations

import glob
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, main
from beam_i3d.media import flow as flow_ops
from beam_i3d.media.crops import (CROPS, crop_boxes, crop_stream, flow_levels, mirror_flow)
from beam_i3d.media.preprocess import decode_for_streams, finish_clip, span_flow
from beam_i3d.media.video_pixels import center_crop
from test_pipeline import moving_texture, write_manifest
from video_factory import write_video

S = 224


def direct_ten(frames: np.ndarray) -> list[np.ndarray]:
    """The ten crops of ``[T,H,W,C]`` as torchvision's TenCrop cuts them, by hand."""
    h, w = frames.shape[1:3]
    top, left = (h - S) // 2, (w - S) // 2

    def five(f):
        return [f[:, :S, :S], f[:, :S, w - S:], f[:, h - S:, :S], f[:, h - S:, w - S:],
                f[:, top:top + S, left:left + S]]
    return five(frames) + five(frames[:, :, ::-1])


# --- Geometry (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(256, 340), (256, 455), (341, 256), (256, 256)])
def test_ten_crops_are_the_direct_slices_in_torchvisions_order(height, width):
    rng = np.random.default_rng(height * width)
    frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    want = direct_ten(frames)
    for k in range(10):
        got = crop_stream("rgb", frames, "ten", k)
        assert got.shape == (3, S, S, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want[k]), k
    # The five are the first five of ten; center is the centre crop of today.
    for k in range(5):
        assert np.array_equal(crop_stream("rgb", frames, "five", k), want[k])
    assert np.array_equal(crop_stream("rgb", frames, "center", 0),
                          center_crop(frames, axes=(1, 2)))
    # Index 5 mirrors the top-right region, 6 the top-left, 7 the bottom-right, 8 the
    # bottom-left; 9 the mirrored frame's centre, the mirror of the centre only when
    # W - 224 is even.
    for mirrored, region in ((5, 1), (6, 0), (7, 3), (8, 2)):
        assert np.array_equal(want[mirrored], want[region][:, :, ::-1])
    assert np.array_equal(want[9], want[4][:, :, ::-1]) == ((width - S) % 2 == 0)
    assert [b[2] for b in crop_boxes("ten", height, width)] == [False] * 5 + [True] * 5
    assert len(crop_boxes("center", height, width)) == 1


def test_an_unknown_crop_set_is_refused(capsys, tmp_path):
    with pytest.raises(ValueError, match="center, five, ten"):
        crop_boxes("three", 256, 256)
    with pytest.raises(SystemExit) as e:
        main(["score", "--manifest", "m.csv", "--output", str(tmp_path / "o"),
              "--crops", "three"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--crops" in err and all(c in err for c in CROPS)


# --- Flow under a mirror (pure) -----------------------------------------------------------


def test_a_mirrored_flow_crop_is_the_mirrored_field_with_u_negated_then_quantised():
    rng = np.random.default_rng(7)
    fields = rng.normal(0, 8, (2, 256, 300, 2)).astype(np.float32)
    fields[:, :40] = 0.0  # no motion: level 128 either way, never 255 - 128 = 127
    # Rounding ties: (u + 20) * 6.375 = k + 0.5, where levels(-u) != 255 - levels(u).
    tie = np.float32((100.5 / 6.375) - 20)
    fields[:, 100:110, :, 0] = tie
    levels = flow_levels(fields, "ten", quantize=True)
    assert levels.shape == (2, 256, 300, 3) and levels.dtype == np.uint8
    mirrored = mirror_flow(fields)
    assert np.array_equal(mirrored[..., 0], -fields[:, :, ::-1, 0])
    assert np.array_equal(mirrored[..., 1], fields[:, :, ::-1, 1])
    plain = direct_ten(flow_ops.quantize_flow(fields))[:5]
    negated = direct_ten(flow_ops.quantize_flow(mirrored))[:5]  # the mirrored frame's five
    for k in range(10):
        got = crop_stream("flow", levels, "ten", k)
        assert got.shape == (2, S, S, 2) and got.dtype == np.uint8
        assert np.array_equal(got, (plain + negated)[k]), k
    zero = crop_stream("flow", levels, "ten", 6)[:, :40]  # mirror of the top-left region
    assert (zero == 128).all()
    # At the ties the levels of -u are not 255 - the levels of u.
    ties = crop_stream("flow", levels, "ten", 6)[:, 100:110, :, 0]
    plain_ties = crop_stream("flow", levels, "ten", 0)[:, 100:110, ::-1, 0]
    assert not np.array_equal(ties, 255 - plain_ties)
    # Unquantised: float32 in [-1, 1], the mirror's u exactly -u.
    unit = flow_levels(fields, "ten", quantize=False)
    assert unit.shape == (2, 256, 300, 2) and unit.dtype == np.float32
    want = direct_ten(flow_ops.flow_to_unit_range(mirrored))
    for k in range(5, 10):
        assert np.array_equal(crop_stream("flow", unit, "ten", k), want[k - 5])
    # Five crops: two channels, plain slices.
    five = flow_levels(fields, "five", quantize=True)
    assert five.shape == (2, 256, 300, 2)
    for k in range(5):
        assert np.array_equal(crop_stream("flow", five, "five", k), plain[k])


def test_span_flow_computes_each_pair_once_on_the_whole_frame():
    """Ten-crop flow is TV-L1 on the whole resized frame, then the levels of u, v and
    -u: the same fields the centre crop is cut from."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (256, 260), dtype=np.uint8)
    gray = np.stack([np.roll(base, 2 * k, axis=1) for k in range(3)])
    whole = span_flow(gray, [(0, 3)], flow_backend="opencv", crops="ten")
    centre = span_flow(gray, [(0, 3)], flow_backend="opencv")
    fields = flow_ops.compute_flow(gray, "opencv")
    assert whole.shape == (2, 256, 260, 3)
    assert np.array_equal(whole, flow_levels(fields, "ten", True))
    assert np.array_equal(center_crop(whole[..., :2], axes=(1, 2)), centre)


def test_forwards_are_planned_over_crops_within_the_frame_cap():
    """Each crop is an input of 224x224 whatever its clip's frame size, so crops of
    clips of different sizes share forwards, and --max-batch-frames counts every
    crop's frames (a batch of clips never makes a forward larger than the cap)."""
    from beam_i3d.job.inference import ClipExample, CropInput, plan_forwards
    from beam_i3d.job.manifest import ClipRequest

    def clip(height, width):
        request = ClipRequest("c", "mem://c.mp4", None, None, None, "m")
        return ClipExample(request, 9, rgb=np.zeros((9, height, width, 3), np.uint8),
                           crops="ten")

    batch = [clip(256, 340), clip(256, 455), clip(341, 256)]
    inputs = [unit for example in batch for unit in example.inputs()]
    assert len(inputs) == 30 and all(isinstance(u, CropInput) for u in inputs)
    assert inputs[13].stream_arrays()["rgb"].shape == (9, S, S, 3)
    assert plan_forwards(inputs, 2000) == [list(range(30))]
    plan = plan_forwards(inputs, 90)  # 10 inputs of 9 frames a forward
    assert [len(p) for p in plan] == [10, 10, 10]
    assert sum(plan, []) == list(range(30))
    centre = ClipExample(batch[0].request, 9, rgb=np.zeros((9, S, S, 3), np.uint8))
    (only,) = centre.inputs()
    assert only is centre  # center: the clip itself, as before


# --- Real encoded video ---------------------------------------------------------------------


def quadrants(height=240, width=320):
    """A frame whose four quadrants are red, green, blue and white (a black cross between
    them), so that every corner crop tells which region it came from."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h - 8, :w - 8] = (255, 0, 0)
    image[:h - 8, w + 8:] = (0, 255, 0)
    image[h + 8:, :w - 8] = (0, 0, 255)
    image[h + 8:, w + 8:] = (255, 255, 255)
    return image


def test_ten_crops_of_a_decoded_video(tmp_path):
    """Decoded with ten crops, a clip holds the whole resized frames; its centre crop is
    bit for bit the centre-crop decode, and each crop the direct slice, corners in
    torchvision's order (the mirrored top-right region is still green)."""
    uri = write_video(str(tmp_path / "q.mp4"), [quadrants()] * 10)
    whole = finish_clip(decode_for_streams(uri, crops="ten"), crops="ten")
    centre = finish_clip(decode_for_streams(uri))
    assert whole.rgb.shape == (10, 256, 341, 3) and centre.rgb.shape == (10, 224, 224, 3)
    assert np.array_equal(center_crop(whole.rgb, axes=(1, 2)), centre.rgb)
    want = direct_ten(whole.rgb)
    colours = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 255, 255)}
    corners = {0: (0, 0), 1: (0, -1), 2: (-1, 0), 3: (-1, -1)}  # a crop's outer corner
    for k in range(10):
        crop = crop_stream("rgb", whole.rgb, "ten", k)
        assert np.array_equal(crop, want[k])
        if k in (4, 9):
            continue
        # Crop 5 mirrors the top-right region: its top-left pixel is that region's
        # top-right corner, green; 6 the top-left (red), 7 bottom-right, 8 bottom-left.
        region = {5: 1, 6: 0, 7: 3, 8: 2}.get(k, k)
        y, x = corners[k - 5 if k >= 5 else k]
        assert np.abs(crop[0, y, x].astype(int) - colours[region]).max() < 40, (k, crop[0, y, x])


# --- Runs ----------------------------------------------------------------------------------


def rows(directory) -> list[dict]:
    return [r for f in sorted(glob.glob(str(directory / "*.parquet")))
            for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops")
    video = moving_texture(root / "a.mp4", 12)  # 96x128: resized 256x341 (W - 224 odd)
    manifest = write_manifest(root / "m.csv", [{"clip_id": "a", "video_uri": video}])
    out = {}
    for name, extra in (("ten", ["--crops", "ten"]), ("center", ["--crops", "center"]),
                        ("plain", []),
                        ("windows", ["--crops", "ten", "--window-frames", "9",
                                     "--stride-frames", "3"])):
        out[name] = root / name
        assert main(["score", "--manifest", manifest, "--output", str(out[name]), "--quiet",
                     "--decode-processes", "1", *extra]) == EXIT_OK
    return video, manifest, out


def test_a_ten_crop_row_is_the_mean_over_its_crops(runs):
    from beam_i3d.job.inference import I3DModelHandler

    video, _, out = runs
    (row,) = rows(out["ten"] / "scores")
    crops = np.asarray(row["rgb_crop_embeddings"], np.float32).reshape(10, 1024)
    np.testing.assert_allclose(row["rgb_embedding"], crops.mean(axis=0), atol=1e-6)
    # Each crop's forward, recomputed from direct slices of the decoded frames.
    frames = finish_clip(decode_for_streams(video, crops="ten"), crops="ten").rgb
    model = I3DModelHandler("default", None).load_model()
    direct = model.score({"rgb": np.stack(direct_ten(frames))})
    np.testing.assert_allclose(crops, direct["rgb_embedding"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(row["rgb_logits"], direct["rgb_logits"].mean(axis=0),
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(row["logits"], direct["logits"].mean(axis=0), atol=1e-4, rtol=0)
    logits = np.asarray(row["logits"], np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert row["predicted_index"] == int(np.argmax(logits))
    assert abs(row["predicted_probability"] - softmax.max()) < 1e-6
    # The crops differ (the mirrored ones too): ten inputs, not one ten times.
    assert len({round(float(c[0]), 6) for c in crops}) > 5
    recipe = json.loads((out["ten"] / "recipe.json").read_text())["recipe"]
    assert recipe["crops"] == "ten"
    meta = pq.read_schema(glob.glob(str(out["ten"] / "scores" / "*.parquet"))[0]).metadata
    assert json.loads(meta[b"beam_i3d.recipe"])["crops"] == "ten"
    assert meta[b"beam_i3d.schema_version"] == b"5"


def test_center_rows_are_those_of_a_run_without_the_option(runs):
    _, _, out = runs
    (center,) = rows(out["center"] / "scores")
    (plain,) = rows(out["plain"] / "scores")
    center.pop("run_id"), plain.pop("run_id")
    assert center == plain
    assert center["rgb_crop_embeddings"] is None and center["flow_crop_embeddings"] is None
    recipes = [json.loads((out[n] / "recipe.json").read_text())["recipe"]
               for n in ("center", "plain")]
    assert recipes[0] == recipes[1] and recipes[0]["crops"] == "center"


def test_features_of_a_ten_crop_windowed_run(runs, tmp_path):
    _, _, out = runs
    feats = tmp_path / "feats"
    assert main(["features", str(out["windows"]), "--out", str(feats)]) == EXIT_OK
    windows = sorted(rows(out["windows"] / "windows"), key=lambda r: r["window_index"])
    assert len(windows) == 2  # 12 frames, windows of 9 every 3: [0, 9), [3, 12)
    array = np.load(feats / "a.npy")
    assert array.dtype == np.float32 and array.shape == (2, 10, 1024)
    for k, w in enumerate(windows):
        np.testing.assert_array_equal(
            array[k], np.float32(w["rgb_crop_embeddings"]).reshape(10, 1024))
        np.testing.assert_allclose(array[k].mean(axis=0), w["rgb_embedding"], atol=1e-6)
    (entry,) = pq.read_table(feats / "index.parquet").to_pylist()
    assert (entry["crops"], entry["feature_dim"], entry["num_windows"]) == (10, 1024, 2)
    # A centre-crop run's index says 1, and its arrays stay [T, D].
    plain = tmp_path / "plain"
    assert main(["features", str(out["plain"]), "--out", str(plain)]) == EXIT_OK
    assert np.load(plain / "a.npy").shape == (1, 1024)
    assert pq.read_table(plain / "index.parquet").column("crops").to_pylist() == [1]


def test_a_resume_with_other_crops_is_refused(runs, capsys):
    _, manifest, out = runs
    for name, crops, shown in (("ten", "five", "crops: recorded ten, this run five"),
                               ("plain", "ten", "crops: recorded center, this run ten")):
        capsys.readouterr()
        assert main(["score", "--manifest", manifest, "--output", str(out[name]),
                     "--skip-existing", "--quiet", "--crops", crops]) == EXIT_CONFIGURATION
        assert shown in capsys.readouterr().err


def test_an_output_recorded_before_crops_resumes_as_center():
    from beam_i3d.job.output_record import differences

    assert differences({"streams": "rgb"}, {"streams": "rgb", "crops": "center"}) == []
    assert differences({"streams": "rgb"}, {"streams": "rgb", "crops": "ten"}) == [
        "crops: recorded center, this run ten"]


def test_two_stream_ten_crop_windows_with_flow(tmp_path):
    """Two streams, ten crops, frame windows, opencv flow in the decoding child (each
    pair once for the item): window 0's per-crop embeddings and logits equal the model's
    on direct slices of the decoded frames and of the float fields (mirrored ones with
    u negated, then quantised), and features writes [T, 10, 2048], RGB then flow."""
    from conftest import release_layout, write_random_checkpoint

    from beam_i3d.job.inference import I3DModelHandler

    flow_ckpt = tmp_path / "flow"
    flow_ckpt.mkdir()
    write_random_checkpoint(release_layout("flow_imagenet"), str(flow_ckpt / "model.ckpt"),
                            seed=5)
    video = moving_texture(tmp_path / "a.mp4", 10)
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": video}])
    out = tmp_path / "run"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet",
                 "--streams", "rgb,flow", "--flow-checkpoint", str(flow_ckpt),
                 "--flow-backend", "opencv", "--crops", "ten", "--window-frames", "9",
                 "--stride-frames", "1", "--decode-processes", "1"]) == EXIT_OK
    windows = sorted(rows(out / "windows"), key=lambda r: r["window_index"])
    assert len(windows) == 2
    first = windows[0]
    # Window 0: frames [0, 9), 8 flow fields looped to 9.
    clip = decode_for_streams(video, streams=("rgb", "flow"), crops="ten")
    frames = clip.rgb[:9]
    fields = flow_ops.compute_flow(clip.gray[:9], "opencv")
    flows = (direct_ten(flow_ops.quantize_flow(fields))[:5]
             + direct_ten(flow_ops.quantize_flow(mirror_flow(fields)))[:5])
    looped = [np.concatenate([f, f[:1]]) for f in flows]  # 8 fields looped to 9
    model = I3DModelHandler("default", str(flow_ckpt)).load_model()
    direct = model.score({"rgb": np.stack(direct_ten(frames)), "flow": np.stack(looped)})
    for stream in ("rgb", "flow"):
        crops = np.float32(first[f"{stream}_crop_embeddings"]).reshape(10, 1024)
        np.testing.assert_allclose(crops, direct[f"{stream}_embedding"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(first[f"{stream}_logits"],
                                   direct[f"{stream}_logits"].mean(axis=0), atol=1e-4, rtol=0)
    np.testing.assert_allclose(first["logits"], direct["logits"].mean(axis=0), atol=1e-4,
                               rtol=0)
    feats = tmp_path / "feats"
    assert main(["features", str(out), "--out", str(feats)]) == EXIT_OK
    array = np.load(feats / "a.npy")
    assert array.shape == (2, 10, 2048) and array.dtype == np.float32
    for k, w in enumerate(windows):
        np.testing.assert_array_equal(array[k, :, :1024],
                                      np.float32(w["rgb_crop_embeddings"]).reshape(10, 1024))
        np.testing.assert_array_equal(array[k, :, 1024:],
                                      np.float32(w["flow_crop_embeddings"]).reshape(10, 1024))
