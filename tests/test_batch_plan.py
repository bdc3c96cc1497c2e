"""How the I3D handler splits a batch into forwards, and what it reports, without TensorFlow.

plan_forwards only looks at the clips' array shapes, so tiny arrays stand in for frames.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from beam_i3d.job.inference import ClipExample, I3DModelHandler, InferenceFailure, plan_forwards
from beam_i3d.job.manifest import ClipRequest


def example(rgb_frames: int | None, flow_frames: int | None = None,
            flow_dtype=np.uint8) -> ClipExample:
    request = ClipRequest("c", "mem://c.mp4", None, None, None, "m")
    rgb = None if rgb_frames is None else np.zeros((rgb_frames, 2, 2, 3), np.uint8)
    flow = None if flow_frames is None else np.zeros((flow_frames, 2, 2, 2), flow_dtype)
    return ClipExample(request=request, num_frames=rgb_frames or 0, rgb=rgb, flow=flow)


# Kinds of clip: frames the model sees are 1, 2, 3 (rgb only) and 5 (rgb 3 + flow 2).
KINDS = {"a": (1, None), "b": (2, None), "c": (3, None), "d": (3, 2)}


def reference_plan(kinds: str, cap: int) -> list[list[int]]:
    """The documented rule, written another way: clips of one shape see equal frame
    counts f, so each shape's clips (in batch order, shapes in order of first appearance)
    go in runs of max(1, cap // f)."""
    plan = []
    for kind in dict.fromkeys(kinds):
        indices = [i for i, k in enumerate(kinds) if k == kind]
        rgb, flow = KINDS[kind]
        size = max(1, cap // (rgb + (flow or 0)))
        plan += [indices[j:j + size] for j in range(0, len(indices), size)]
    return plan


def test_every_small_batch_follows_the_rule():
    checked = 0
    for length in range(6):
        for kinds in itertools.product(KINDS, repeat=length):
            batch = [example(*KINDS[k]) for k in kinds]
            for cap in range(1, 12):
                assert plan_forwards(batch, cap) == reference_plan(kinds, cap), (kinds, cap)
                checked += 1
    assert checked == 11 * sum(4 ** n for n in range(6))


def test_plan_exact_cases():
    assert plan_forwards([], 10) == []
    ten = [example(10) for _ in range(5)]
    assert plan_forwards(ten, 30) == [[0, 1, 2], [3, 4]]  # exactly at the cap: together
    assert plan_forwards(ten, 29) == [[0, 1], [2, 3], [4]]
    assert plan_forwards(ten, 9) == [[0], [1], [2], [3], [4]]  # over the cap: alone
    assert plan_forwards(ten, 50) == [[0, 1, 2, 3, 4]]
    # Flow frames count too: 9 + 8 = 17 a clip, so two fit in 34 and not in 33.
    both = [example(9, 8) for _ in range(3)]
    assert plan_forwards(both, 34) == [[0, 1], [2]]
    assert plan_forwards(both, 33) == [[0], [1], [2]]
    # Same frame count, flow of another dtype: another shape, another forward.
    mixed = [example(9, 8), example(9, 8, np.float32), example(9, 8)]
    assert plan_forwards(mixed, 1000) == [[0, 2], [1]]


def test_clip_example_streams_frames_and_shape_key():
    both = example(9, 8, np.float32)
    assert list(both.stream_arrays()) == ["rgb", "flow"]
    assert both.stream_arrays()["rgb"] is both.rgb and both.stream_arrays()["flow"] is both.flow
    assert both.frames() == 17
    assert both.shape_key() == (("rgb", (9, 2, 2, 3), "|u1"), ("flow", (8, 2, 2, 2), "<f4"))
    flow_only = example(None, 12)
    assert list(flow_only.stream_arrays()) == ["flow"]
    assert flow_only.frames() == 12
    assert flow_only.shape_key() == (("flow", (12, 2, 2, 2), "|u1"),)
    rgb_only = example(10)
    assert list(rgb_only.stream_arrays()) == ["rgb"] and rgb_only.frames() == 10


class WithMessage(Exception):
    """As TensorFlow's OpError: ``message`` is the error's own text, and str() may add
    more (the op's stack trace)."""

    def __init__(self, message: str, shown: str):
        super().__init__(shown)
        self.message = message


def test_failure_keeps_the_message_without_graph_boilerplate():
    text = ("Graph execution error:\n\n"
            "Detected at node 'i3d/conv' defined at (most recent call last):\n"
            "  File \"/x/model.py\", line 3, in call\n"
            "  Input to reshape is a tensor with 10 values  \n"
            "\n"
            "\t [[{{node i3d/Reshape}}]]\n"
            "  but the requested shape has 12 [Op:__inference_predict_1]\n")
    failure = InferenceFailure.of(WithMessage(text, "ignored: str() of the error"))
    assert failure == InferenceFailure(
        "WithMessage", "Input to reshape is a tensor with 10 values "
                       "but the requested shape has 12 [Op:__inference_predict_1]")


def test_failure_message_falls_back_to_str_and_to_the_type():
    assert InferenceFailure.of(ValueError("bad  value\n second")) == InferenceFailure(
        "ValueError", "bad  value second")
    assert InferenceFailure.of(WithMessage("", "from str")) == InferenceFailure(
        "WithMessage", "from str")
    assert InferenceFailure.of(MemoryError()) == InferenceFailure("MemoryError", "MemoryError")
    only_boilerplate = RuntimeError("Graph execution error:\nDetected at node 'x'")
    assert InferenceFailure.of(only_boilerplate) == InferenceFailure("RuntimeError",
                                                                     "RuntimeError")


def test_failure_message_is_cut_at_2000_characters():
    message = "".join(chr(ord("a") + i % 26) for i in range(2500))
    assert InferenceFailure.of(RuntimeError(message)).message == message[:2000]
    assert InferenceFailure.of(RuntimeError(message[:2000])).message == message[:2000]


def test_handler_settings():
    handler = I3DModelHandler("rgb.ckpt", "flow.ckpt", max_batch_size=3, max_batch_frames=90,
                              model_copies=2, allow_tf32=True, require_gpu=True)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 3}
    assert handler.share_model_across_processes() and handler.model_copies() == 2
    assert (handler.rgb_checkpoint, handler.flow_checkpoint, handler.max_batch_frames,
            handler.allow_tf32, handler.require_gpu) == ("rgb.ckpt", "flow.ckpt", 90, True, True)
    per_process = I3DModelHandler("rgb.ckpt", None, max_batch_size=1, max_batch_frames=1)
    assert not per_process.share_model_across_processes()
    assert (per_process.allow_tf32, per_process.require_gpu) == (False, False)
    assert handler.get_metrics_namespace() == "beam_i3d"


def test_handler_defaults():
    # What a library user gets from I3DModelHandler(): the RGB stream with the default
    # weights, 8 clips a batch, 2000 frames a forward, one model per process.
    handler = I3DModelHandler()
    assert (handler.rgb_checkpoint, handler.flow_checkpoint, handler.max_batch_frames) == (
        "default", None, 2000)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    assert not handler.share_model_across_processes()
    assert (handler.allow_tf32, handler.require_gpu) == (False, False)


@pytest.mark.parametrize("size,frames", [(0, 10), (4, 0), (-1, -1)])
def test_handler_refuses_empty_batches(size, frames):
    with pytest.raises(ValueError) as info:
        I3DModelHandler("rgb.ckpt", None, max_batch_size=size, max_batch_frames=frames)
    assert str(info.value) == "max_batch_size and max_batch_frames must be at least 1"


def test_num_bytes_counts_every_stream_of_every_clip():
    handler = I3DModelHandler("rgb.ckpt", None, max_batch_size=2, max_batch_frames=100)
    batch = [example(9, 8, np.float32), example(10)]
    # rgb 9*2*2*3 + flow 8*2*2*2*4 bytes, then rgb 10*2*2*3.
    assert handler.get_num_bytes(batch) == 108 + 256 + 120


def test_beams_resource_warning_is_dropped_and_nothing_else(caplog):
    import logging

    # Beam's RunInference warns on the root logger on every batch when `resource` is
    # missing (apache_beam.ml.inference.base._get_current_process_memory_in_bytes).
    with caplog.at_level(logging.WARNING):
        logging.warning("Resource module is not available for current platform, "
                        "memory usage cannot be fetched.")
        logging.warning("Resource use is high")
        logging.getLogger("beam_i3d.job.inference").warning("a forward of 3 clips failed")
    assert [r.getMessage() for r in caplog.records] == ["Resource use is high",
                                                       "a forward of 3 clips failed"]
