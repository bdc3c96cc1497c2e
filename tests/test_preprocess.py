"""preprocess_clip as the pipeline uses it, the `beam-i3d preprocess` command, and gs://."""

from __future__ import annotations

import io


import numpy as np
import pytest

from beam_i3d import errors
from beam_i3d.cli import main
from beam_i3d.media.preprocess import ClipTensors, loop_to_length, preprocess_clip, uint8_to_unit_range
from video_factory import code_frame, read_code, write_video


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """3 frames at 25 fps, 200x120."""
    path = str(tmp_path_factory.mktemp("short") / "short.mp4")
    return write_video(path, lambda i: code_frame(i + 1, 200, 120), num_frames=3)


def test_short_clips_are_looped_to_nine_frames(short_clip):
    clip = preprocess_clip(short_clip)
    assert isinstance(clip, ClipTensors)
    assert clip.num_frames == 3 and clip.flow is None and clip.flow_quantized is None
    assert clip.rgb.shape == (9, 224, 224, 3) and clip.rgb.dtype == np.uint8
    assert [read_code(f) for f in clip.rgb] == [1, 2, 3] * 3
    assert (clip.start_sec, clip.end_sec) == (0.0, pytest.approx(0.12))
    assert (clip.source_width, clip.source_height, clip.source_codec) == (200, 120, "h264")
    assert clip.source_fps == pytest.approx(25.0)


def test_single_frame_has_zero_flow(short_clip):
    clip = preprocess_clip(short_clip, 0.08, streams=("rgb", "flow"))  # only the last frame
    assert clip.num_frames == 1 and [read_code(f) for f in clip.rgb] == [3] * 9
    assert clip.flow.shape == (9, 224, 224, 2)
    assert set(np.unique(clip.flow)) == {128}  # zero motion, quantised


def test_loop_to_length():
    frames = np.arange(4)[:, None]
    assert loop_to_length(frames, 9)[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert loop_to_length(np.arange(12), 9).shape == (12,)


def test_numpy_normalisation_matches_the_model_bit_for_bit():
    import tensorflow as tf

    from model import i3d

    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(uint8_to_unit_range(levels),
                                  i3d.uint8_to_unit_range(tf.constant(levels)).numpy())


def test_bad_arguments_are_not_video_errors(short_clip):
    with pytest.raises(ValueError):
        preprocess_clip(short_clip, streams=("depth",))
    with pytest.raises(ValueError):
        preprocess_clip(short_clip, max_seconds=0)


def test_command_writes_the_release_layout(short_clip, tmp_path, capsys):
    prefix = str(tmp_path / "out" / "short")
    assert main(["preprocess", short_clip, "--streams", "rgb,flow", "--out", prefix]) == 0
    rgb, flow = np.load(prefix + "_rgb.npy"), np.load(prefix + "_flow.npy")
    assert rgb.shape == (1, 9, 224, 224, 3) and rgb.dtype == np.float32
    assert flow.shape == (1, 9, 224, 224, 2) and flow.dtype == np.float32
    assert -1 <= rgb.min() < rgb.max() <= 1 and -1 <= flow.min() <= flow.max() <= 1
    clip = preprocess_clip(short_clip)
    np.testing.assert_array_equal(rgb[0], clip.rgb / np.float32(255) * 2 - 1)
    assert "3 frames" in capsys.readouterr().out
    # Bad input: a one-line error naming the file, exit status 1.
    assert main(["preprocess", str(tmp_path / "missing.mp4"), "--out", prefix]) == 1
    assert "missing.mp4: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preprocess", short_clip, "--streams", "rgb,depth", "--out", prefix])


# --- gs:// through Beam's FileSystems, against a local GCS emulator ---------------------


@pytest.fixture
def gcs_bucket(gcs_emulator):
    return "gs://test-bucket/preprocess"


def test_gcs_video_and_output(gcs_bucket, short_clip, capsys):
    from apache_beam.io.filesystems import FileSystems

    uri = f"{gcs_bucket}/videos/short.mp4"
    with FileSystems.create(uri) as f, open(short_clip, "rb") as local:
        f.write(local.read())
    clip = preprocess_clip(uri)
    np.testing.assert_array_equal(clip.rgb, preprocess_clip(short_clip).rgb)
    assert main(["preprocess", uri, "--out", f"{gcs_bucket}/npy/short"]) == 0
    with FileSystems.open(f"{gcs_bucket}/npy/short_rgb.npy") as f:
        written = np.load(io.BytesIO(f.read()))
    assert written.shape == (1, 9, 224, 224, 3) and written.dtype == np.float32
    # The same values as the local clip's, in the release's [-1, 1] layout.
    np.testing.assert_array_equal(written[0], clip.rgb / np.float32(255) * 2 - 1)
    with pytest.raises(errors.VideoNotFound) as info:
        preprocess_clip(f"{gcs_bucket}/videos/missing.mp4")
    assert info.value.uri == f"{gcs_bucket}/videos/missing.mp4"
