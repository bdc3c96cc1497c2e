"""A decode pool's results are views of the shared memory the child wrote (mapped, not
copied, in this process), with no name left in /dev/shm once collected; and they are
ordinary arrays to their users: equal to decoding in process, writable, picklable."""

from __future__ import annotations

import mmap
import os
import pickle

import numpy as np
import pytest

from beam_i3d.media.decode_pool import DecodePool
from beam_i3d.media.preprocess import preprocess_clip
from test_pipeline import moving_texture


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return moving_texture(tmp_path_factory.mktemp("v") / "v.mp4", 12, seed=5)


def our_segments() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"bi3d{os.getpid()}")]


def mapped(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):  # numpy's frombuffer keeps the buffer's view
        base = base.obj
    return isinstance(base, mmap.mmap)


def test_results_are_mapped_not_copied_and_leave_no_name_behind(video):
    with DecodePool(1) as pool:
        pool.submit("rgb", video, streams=("rgb",))
        pool.submit("both", video, streams=("rgb", "flow"), flow_backend="opencv")
        got = {f.key: f.result for f in pool.results()}
        assert not our_segments()  # unlinked on arrival, while the arrays live on
    for key, streams in (("rgb", ("rgb",)), ("both", ("rgb", "flow"))):
        want = preprocess_clip(video, streams=streams, flow_backend="opencv")
        for field in streams:
            array = getattr(got[key], field)
            assert mapped(array), (key, field)
            np.testing.assert_array_equal(array, getattr(want, field))
    rgb = got["rgb"].rgb
    assert rgb.flags.writeable and rgb.flags.c_contiguous
    rgb[0, 0, 0] = 7  # a private change: the segment is this process's alone now
    back = pickle.loads(pickle.dumps(rgb))
    assert not mapped(back) and back[0, 0, 0, 0] == 7
    np.testing.assert_array_equal(back, rgb)


def test_a_child_decodes_straight_into_the_segment_it_hands_over(video, tmp_path):
    """The child's half, run here: decode_for_streams writes its frames into segments of
    the allocator, _to_shared hands those over without a copy and unlinks the rest (the
    gray frames a finished clip no longer needs), and a failed decode leaves nothing."""
    from beam_i3d.errors import NotAVideo
    from beam_i3d.media import shared_arrays
    from beam_i3d.media.preprocess import decode_for_streams

    prefix = f"bi3d{os.getpid()}ptestc1"
    allocator = shared_arrays._SegmentAllocator(prefix, 1)
    clip = decode_for_streams(video, streams=("rgb", "flow"), allocate=allocator)
    want = decode_for_streams(video, streams=("rgb", "flow"))
    np.testing.assert_array_equal(clip.rgb, want.rgb)
    np.testing.assert_array_equal(clip.gray, want.gray)
    assert mapped(clip.rgb) and mapped(clip.gray)
    assert sorted(our_segments()) == [f"{prefix}_1_4", f"{prefix}_1_5"]  # rgb, gray
    meta, described = shared_arrays._to_shared(clip, ("rgb",), prefix, 1, allocator)
    assert meta.rgb is None and [d[:2] for d in described] == [("rgb", f"{prefix}_1_4")]
    assert our_segments() == [f"{prefix}_1_4"]  # the gray frames' segment is unlinked
    del clip
    back = shared_arrays._from_shared(meta, described)
    np.testing.assert_array_equal(back.rgb, want.rgb)
    assert not our_segments()

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    allocator = shared_arrays._SegmentAllocator(prefix, 2)
    with pytest.raises(NotAVideo):
        decode_for_streams(str(bad), allocate=allocator)
    allocator.release()
    assert not our_segments()
