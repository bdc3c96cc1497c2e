"""beam_i3d.media.decode_pool: clips decoded in child processes, with real encoded videos and
real faults (abort, segfault, hang, memory exhaustion, SIGKILL, exit) injected through
the test-only hook in tests/decode_faults.py."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil

import numpy as np
import pytest

from beam_i3d import errors
from beam_i3d.media.decode_pool import (
    HOOK_ENV,
    DecodePool,
    child_exception,
    clip_time_limit,
    flow_time_limit,
)
from beam_i3d.media.preprocess import ClipTensors, preprocess_clip
from beam_i3d.media.recipe import DecodeLimits
from test_pipeline import moving_texture

FAULTS = ("ABORT", "SEGV", "HANG", "HOG", "KILLED", "EXIT", "RAISE")
# Small budgets so that the hang is killed soon: 1 s decode budget + 1 s grace.
LIMITS = DecodeLimits(decode_timeout_seconds=1.0, memory_mb=1024)
GRACE = 1.0


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    files = {
        "good": moving_texture(d / "good.mp4", 20),
        "other": moving_texture(d / "other.mp4", 16, rate=30, seed=1),
        "short": moving_texture(d / "short.mp4", 3, seed=2),
        "pair": moving_texture(d / "pair.mp4", 2, seed=3),
    }
    for fault in FAULTS:
        files[fault] = str(d / f"{fault}.mp4")
        shutil.copy(files["good"], files[fault])
    text = d / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    files["text"] = str(text)
    return files


@pytest.fixture(scope="module", autouse=True)
def fault_hook():
    """Children started while this is set call decode_faults.inject(uri) first."""
    old = os.environ.get(HOOK_ENV)
    os.environ[HOOK_ENV] = "decode_faults:inject"
    yield
    if old is None:
        os.environ.pop(HOOK_ENV, None)
    else:
        os.environ[HOOK_ENV] = old


def our_segments() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"bi3d{os.getpid()}")]


def assert_same_clip(got: ClipTensors, want: ClipTensors) -> None:
    assert isinstance(got, ClipTensors), got
    for field in dataclasses.fields(ClipTensors):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, field.name
            assert np.array_equal(a, b), field.name
        else:
            assert a == b, field.name


def test_good_clips_bit_identical_to_in_process(videos):
    jobs = {
        "rgb": (videos["good"], None, None, {}),
        "range": (videos["other"], 0.1, 0.4, {"streams": ("rgb",)}),
        "flow_cv": (videos["short"], None, None,
                    {"streams": ("rgb", "flow"), "flow_backend": "opencv"}),
        "flow_cv_float": (videos["pair"], None, None,
                          {"streams": ("flow",), "flow_backend": "opencv",
                           "quantize_flow": False}),
    }
    with DecodePool(2, LIMITS, grace_seconds=GRACE) as pool:
        for key, (uri, start, end, kwargs) in jobs.items():
            pool.submit(key, uri, start, end, **kwargs)
        assert pool.in_flight() == len(jobs)
        finished = {f.key: f for f in pool.results()}
        assert pool.in_flight() == 0 and pool.next_result(timeout=0) is None
    assert sorted(finished) == sorted(jobs)
    for key, (uri, start, end, kwargs) in jobs.items():
        assert finished[key].seconds > 0
        assert_same_clip(finished[key].result, preprocess_clip(uri, start, end, limits=LIMITS,
                                                               **kwargs))
    assert finished["flow_cv_float"].result.flow.dtype == np.float32
    assert our_segments() == []


def test_tf_flow_is_computed_in_the_parent(videos, monkeypatch):
    """The child decodes (RGB crops and grayscale frames) and the parent runs the flow.
    The "tf" backend is replaced by a probe (OpenCV's flow, recording the process), so
    as not to spend a minute on TensorFlow's import and XLA compilation here; a child
    that tried to run "tf" itself would import the real, unpatched backend."""
    from beam_i3d.media import flow
    from beam_i3d.media.flow import tvl1_flow_opencv

    calls = []

    def probe(prev, nxt, *, batch_pairs=None):
        calls.append(os.getpid())
        return tvl1_flow_opencv(prev, nxt)

    monkeypatch.setitem(flow._BACKENDS, "tf", probe)
    kwargs = {"streams": ("rgb", "flow"), "flow_backend": "tf"}
    with DecodePool(1, LIMITS, grace_seconds=GRACE) as pool:
        pool.submit("tf", videos["pair"], **kwargs)
        (finished,) = list(pool.results())
    assert calls == [os.getpid()]
    assert_same_clip(finished.result, preprocess_clip(videos["pair"], limits=LIMITS, **kwargs))
    assert finished.result.flow_backend == "tf"


def test_faults_each_answered_once_and_the_pool_goes_on(videos):
    """One child, so that each fault is followed by a good clip on a fresh child."""
    want = preprocess_clip(videos["good"], limits=LIMITS)
    expected = {
        "ABORT": (errors.DecoderCrashed, "SIGABRT"),
        "SEGV": (errors.DecoderCrashed, "SIGSEGV"),
        "HANG": (errors.DecodeTimeout, "killed"),
        "HOG": (errors.DecodeOutOfMemory, "out of memory"),
        "KILLED": (errors.DecodeOutOfMemory, "out-of-memory killer"),
        "EXIT": (errors.DecoderCrashed, "exited (status 3)"),
        "text": (errors.NotAVideo, "not a video"),
    }
    order = []
    for name in expected:
        order += [name, f"good-after-{name}"]
    order.append("RAISE")
    with DecodePool(1, LIMITS, grace_seconds=GRACE) as pool:
        for key in order:
            pool.submit(key, videos["good"] if key.startswith("good") else videos[key])
        finished = list(pool.results())
        # Still working afterwards.
        pool.submit("last", videos["good"])
        finished += list(pool.results())
    keys = [f.key for f in finished]
    assert sorted(keys) == sorted(order + ["last"])  # each exactly once
    results = {f.key: f for f in finished}
    for key, f in results.items():
        if key.startswith("good") or key == "last":
            assert_same_clip(f.result, want)
    for name, (cls, words) in expected.items():
        error = results[name].result
        assert type(error) is cls, (name, error)
        assert str(error).startswith(videos[name] + ": ") and words in str(error), str(error)
    hang = results["HANG"]
    assert 2.0 <= hang.seconds < 2.0 + 3.0  # killed at the 1 s budget + 1 s grace
    raised = results["RAISE"].result
    assert type(raised).__name__ == "KeyError" and "an unexpected failure" in str(raised)
    assert "decode_faults.py" in raised.child_traceback
    assert our_segments() == []


def test_two_children_mixed_faults(videos):
    names = ["good", "ABORT", "other", "HANG", "good", "HOG", "SEGV", "other", "text", "good"]
    with DecodePool(2, LIMITS, grace_seconds=GRACE) as pool:
        for i, name in enumerate(names):
            pool.submit(i, videos[name])
        seen = []
        while pool.in_flight():
            finished = pool.next_result(timeout=30)
            assert finished is not None
            seen.append(finished)
    assert sorted(f.key for f in seen) == list(range(len(names)))
    for f in seen:
        name = names[f.key]
        if name in ("good", "other"):
            assert isinstance(f.result, ClipTensors)
        else:
            assert isinstance(f.result, errors.VideoError) and f.result.uri == videos[name]
    assert our_segments() == []


def test_arguments_checked_at_submit(videos):
    with DecodePool(1, LIMITS) as pool:
        with pytest.raises(ValueError, match="streams"):
            pool.submit("a", videos["good"], streams=("depth",))
        with pytest.raises(ValueError, match="unknown flow backend"):
            pool.submit("a", videos["good"], streams=("flow",), flow_backend="nope")
        assert pool.in_flight() == 0
        pool.submit("a", videos["good"])
        with pytest.raises(ValueError, match="already in flight"):
            pool.submit("a", videos["good"])
        assert [f.key for f in pool.results()] == ["a"]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit("b", videos["good"])
    with pytest.raises(ValueError, match="never fork"):
        DecodePool(1, LIMITS, start_method="fork")


def test_close_removes_segments_a_dead_child_left(videos):
    from multiprocessing import resource_tracker, shared_memory

    pool = DecodePool(1, LIMITS)
    leftover = shared_memory.SharedMemory(name=f"{pool._prefix}c7_3_0", create=True, size=64)
    resource_tracker.unregister(leftover._name, "shared_memory")
    leftover.close()
    assert our_segments()
    pool.close()
    pool.close()  # idempotent
    assert our_segments() == []


def test_error_types_survive_and_limits_rule():
    e = child_exception("KeyError", "'x'", "Traceback...", "builtins")
    assert type(e).__name__ == "KeyError" and str(e) == "'x'"
    again = pickle.loads(pickle.dumps(e))
    assert type(again).__name__ == "KeyError" and again.child_traceback == "Traceback..."
    assert clip_time_limit(DecodeLimits(decode_timeout_seconds=60), 5) == 65
    # 249 pairs of 256x455: 5 s + 40 s per megapixel-pair.
    assert flow_time_limit(249, 256, 455, 5, 40) == pytest.approx(5 + 40 * 249 * 256 * 455 / 1e6)


def test_decode_clip_dofn_emits_everything_in_its_window(videos):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam_i3d.job.manifest import ClipRequest
    from beam_i3d.job.pipeline import DecodeClip, ScoreOptions

    requests = [ClipRequest(name, videos[name], None, None, None, f"m.csv:{i}")
                for i, name in enumerate(["good", "ABORT", "text", "other", "RAISE"])]
    options = ScoreOptions(manifest="m.csv", output="out", limits=LIMITS, decode_processes=1)
    with TestPipeline() as p:
        out = (p | beam.Create(requests)
               | beam.ParDo(DecodeClip(options)).with_outputs(DecodeClip.ERRORS, main="clips"))
        assert_that(out.clips | "Clips" >> beam.Map(lambda c: (c.request.clip_id, c.num_frames,
                                                               c.rgb.shape)),
                    equal_to([("good", 20, (20, 224, 224, 3)), ("other", 14, (14, 224, 224, 3))]),
                    label="CheckClips")
        assert_that(out.errors | "Errors" >> beam.Map(lambda r: (r["clip_id"], r["error_type"],
                                                                 r["stage"])),
                    equal_to([("ABORT", "DecoderCrashed", "decode"), ("text", "NotAVideo", "decode"),
                              ("RAISE", "KeyError", "decode")]),
                    label="CheckErrors")


def test_decode_clip_dofn_fails_a_missing_local_file_without_a_child(videos, tmp_path):
    """A local file that does not exist is answered in the parent (one stat), with the
    error row a child would have sent; anything else still goes through the pool."""
    from beam_i3d.job.manifest import ClipRequest
    from beam_i3d.job.pipeline import DecodeClip, ScoreOptions
    from beam_i3d.job.records import request_error

    missing = str(tmp_path / "absent.mp4")
    options = ScoreOptions(manifest="m.csv", output="out", limits=LIMITS, decode_processes=1)
    dofn = DecodeClip(options)
    dofn.setup()
    try:
        for uri in (missing, "file://" + missing):
            request = ClipRequest("absent", uri, 1.0, 3.0, None, "m.csv:2", row_key="absent")
            (out,) = list(dofn.process(request, 0, None))
            assert out.tag == DecodeClip.ERRORS
            # What the pool answers for the same file, built into a row the same way.
            with DecodePool(1, LIMITS) as pool:
                pool.submit("k", uri, 1.0, 3.0)
                (finished,) = list(pool.results())
            assert out.value == request_error("decode", finished.result, request)
            assert out.value["error_type"] == "VideoNotFound"
            assert out.value["message"] == f"{uri}: no such file"
        assert dofn._pool.in_flight() == 0 and not dofn._pool._children  # no child started

        # A missing file with an empty range fails on its range first, in a child.
        inverted = ClipRequest("inverted", missing, 3.0, 1.0, None, "m.csv:3")
        assert list(dofn.process(inverted, 0, None)) == []
        assert dofn._pool.in_flight() == 1
        (out,) = list(dofn.finish_bundle())
        assert out.tag == DecodeClip.ERRORS and out.value.value["error_type"] == "EmptyClip"
    finally:
        dofn.teardown()
