"""A decoder thread that cannot start (``pthread_create`` failing with EAGAIN, as on a
loaded machine) is the system's failure, not the file's: it is reported as the
transient DecodeResourceExhausted, never as CorruptVideo, and the decode pool's
children decode with one FFmpeg thread, which starts no thread at all.

The starved processes are real: :func:`decode_faults.starve_threads` makes every new
thread's stack too big for the address space left, so FFmpeg's ``avcodec_open2``
really returns EAGAIN."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

import numpy as np
import pytest

from beam_i3d import errors
from beam_i3d.fvd.clips import (
    ClipSpec,
    _count_video_frames,
    _read_video,
    count_frames,
    read_protocol_clip,
)
from beam_i3d.media.decode_pool import HOOK_ENV, DecodePool
from beam_i3d.media.preprocess import preprocess_clip
from beam_i3d.media.video import decode_clip, probe_extent
from decode_faults import decode_without_threads
from video_factory import textured_image, write_video

FRAMES = 20


def moving(i: int) -> np.ndarray:
    gray = np.roll(textured_image(96, 128, seed=3), 4 * i, axis=1)
    return np.stack([gray, gray[::-1], 255 - gray], axis=-1)


@pytest.fixture(scope="module", params=["h264", "ffv1"])
def video(tmp_path_factory, request):
    """H.264 (yuv420p): FFmpeg decodes it with frame threads when let. FFV1 in bgr0:
    swscale converts each frame to RGB, with threads of its own when let."""
    directory = tmp_path_factory.mktemp("resources")
    if request.param == "h264":
        return write_video(str(directory / "NOTHREAD.mp4"), moving, num_frames=FRAMES)
    return write_video(str(directory / "NOTHREAD.mkv"), moving, num_frames=FRAMES,
                       codec="ffv1", pix_fmt="bgr0")


def in_a_starved_process(uri: str, thread_limit: int | None) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        return executor.submit(decode_without_threads, uri, thread_limit).result(timeout=120)


def test_a_decoder_thread_that_cannot_start_is_transient_not_corrupt(video):
    found = in_a_starved_process(video, None)
    for name in ("decode_clip", "fvd_count", "fvd_read"):
        error = found[name]
        # Before the fix: CorruptVideo "decoding failed after 0 frames: Resource
        # temporarily unavailable", which --retry-errors never retries.
        assert type(error).__name__ == "DecodeResourceExhausted", (name, error)
        assert error.transient and errors.is_transient("DecodeResourceExhausted", "decode")
        assert str(error).startswith(f"{video}: ") and "failed" in str(error)
        assert "Resource temporarily unavailable" in error.cause, error.cause
        assert "not a fault of the file" in error.cause
    assert "after 0 frames" in found["fvd_count"].cause  # the decoder opens at the first packet
    # Probing decodes no frame, so it never starts a decoder thread.
    assert found["probe_extent"] == probe_extent(video)
    assert not errors.CorruptVideo.transient


def test_a_decoder_of_one_thread_starts_none(video):
    """What the children do (limit_decode_threads(1)): every decoding path works in a
    process where no thread can start, with the same frames as threaded decoding."""
    found = in_a_starved_process(video, 1)
    np.testing.assert_array_equal(found["decode_clip"], decode_clip(video, decode_threads=2).rgb)
    assert found["fvd_count"] == _count_video_frames(video) == FRAMES
    np.testing.assert_array_equal(found["fvd_read"], _read_video(video, 4))
    assert found["probe_extent"] == probe_extent(video)


def test_children_decode_every_kind_of_work_without_a_thread(video, monkeypatch):
    """The hook starves each child before its task (tests/decode_faults.py, NOTHREAD):
    clips, fvd's frame counts and clips, and probes still come back as in process."""
    monkeypatch.setenv(HOOK_ENV, "decode_faults:inject")
    spec = ClipSpec(frames=8)
    with DecodePool(1) as pool:
        pool.submit("clip", video)
        pool.submit_call("count", video, count_frames, None)
        pool.submit_call("read", video, read_protocol_clip, spec, FRAMES, "k", arrays=("rgb",))
        pool.submit_call("probe", video, probe_extent)
        got = {f.key: f.result for f in pool.results()}
    for key, result in got.items():
        assert not isinstance(result, BaseException), (key, result)
    np.testing.assert_array_equal(got["clip"].rgb, preprocess_clip(video).rgb)
    assert got["count"] == FRAMES
    np.testing.assert_array_equal(got["read"].rgb,
                                  read_protocol_clip(video, None, spec, FRAMES, "k").rgb)
    assert got["probe"] == probe_extent(video)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"bi3d{os.getpid()}")]
