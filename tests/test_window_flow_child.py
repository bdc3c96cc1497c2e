"""With the ``opencv`` flow backend a windowed work item's flow is computed in the decoding
child, as a clip's is (spread over the pool, not in the worker process), each frame pair
once for the whole item, each window taking its slice: the windows equal, bit for bit, the same ranges decoded as clips; a child
that overruns the flow's time limit costs every window of the item a DecodeTimeout and
leaves no shared memory behind."""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction

import numpy as np
import pytest

from beam_i3d.errors import DecodeTimeout
from beam_i3d.job.windows import Window
from beam_i3d.media import preprocess
from beam_i3d.media.decode_pool import DecodePool
from beam_i3d.media.preprocess import ClipTensors, preprocess_clip
from test_pipeline import moving_texture

# 10 frames at 25 fps: two overlapping windows and a short last one (2 frames, looped).
WINDOWS = [Window(0, Fraction(0), Fraction(1, 5)), Window(1, Fraction(3, 25), Fraction(8, 25)),
           Window(2, Fraction(8, 25), Fraction(2, 5))]
STREAMS = ("rgb", "flow")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return moving_texture(tmp_path_factory.mktemp("v") / "v.mp4", 10, size=(48, 64), seed=2)


def our_segments() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"bi3d{os.getpid()}")]


def no_flow_here(*args, **kwargs):
    raise AssertionError("optical flow computed in the worker process")


def test_windows_flow_is_computed_in_the_child_and_equals_each_window_as_a_clip(
        video, monkeypatch):
    # Children are spawned: the patch holds in this process only, where no flow may run.
    monkeypatch.setattr(preprocess, "clip_flow", no_flow_here)
    monkeypatch.setattr(preprocess, "span_flow", no_flow_here)
    with DecodePool(1) as pool:
        pool.submit("item", video, streams=STREAMS, flow_backend="opencv", windows=WINDOWS)
        (finished,) = list(pool.results())
        assert not our_segments()
    with pytest.raises(AssertionError, match="in the worker process"):  # the patch bites
        preprocess.finish_clip(preprocess.decode_for_streams(video, streams=STREAMS),
                               streams=STREAMS, flow_backend="opencv")
    monkeypatch.undo()
    assert isinstance(finished.result, list) and len(finished.result) == 3
    for window, got in zip(WINDOWS, finished.result):
        want = preprocess_clip(video, float(window.start), float(window.end), streams=STREAMS,
                               flow_backend="opencv", max_seconds=None)
        assert isinstance(got, ClipTensors), got
        for field in dataclasses.fields(ClipTensors):
            a, b = getattr(got, field.name), getattr(want, field.name)
            if isinstance(b, np.ndarray):
                assert a.dtype == b.dtype and a.shape == b.shape, (window, field.name)
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, (window, field.name)
    assert [r.num_frames for r in finished.result] == [5, 5, 2]
    assert finished.result[2].flow.shape == (9, 224, 224, 2)  # 1 pair, looped to 9


def test_a_child_over_the_flow_time_limit_fails_every_window_and_leaves_nothing(video):
    with DecodePool(1, grace_seconds=0.2, flow_seconds_per_megapixel_pair=1e-6) as pool:
        pool.submit("item", video, streams=STREAMS, flow_backend="opencv", windows=WINDOWS)
        (finished,) = list(pool.results())
        assert not our_segments()
    errors = finished.result if isinstance(finished.result, list) else [finished.result] * 3
    assert len(errors) == 3
    for error in errors:
        assert isinstance(error, DecodeTimeout), error
        assert "for the optical flow of 8 pairs of 256x341 frames" in str(error)  # 0-7 once, not 4 + 4 + 1
