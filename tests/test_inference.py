"""The I3D model handler: batching that never changes a clip's result, failures isolated."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_i3d.job.inference import ClipExample, I3DModelHandler, InferenceFailure, plan_forwards
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.job.pipeline import ScoreClips
from beam_i3d.media.preprocess import uint8_to_unit_range
from model.labels import label_map


def clip(clip_id: str, frames: int, seed: int) -> ClipExample:
    rng = np.random.default_rng(seed)
    request = ClipRequest(clip_id, f"mem://{clip_id}.mp4", None, None, None, f"m:{seed}")
    rgb = rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)
    return ClipExample(request=request, num_frames=frames, rgb=rgb)


@pytest.fixture(scope="module")
def handler():
    return I3DModelHandler("default", None, max_batch_size=4, max_batch_frames=40)


@pytest.fixture(scope="module")
def scorer(handler):
    return handler.load_model()


def too_short_error(scorer) -> str:
    """The error type of a clip under 9 frames, by the backend the default (auto) chose
    here: TensorFlow's run-time check, or the one OpenVINO's backend makes first."""
    return {"tf": "InvalidArgumentError", "openvino": "InvalidModelInput"}[
        scorer.backend.name]


def test_plan_groups_equal_shapes_under_the_frame_cap():
    batch = [clip("a", 12, 0), clip("b", 20, 1), clip("c", 12, 2), clip("d", 12, 3),
             clip("e", 50, 4)]
    assert plan_forwards(batch, 30) == [[0, 2], [3], [1], [4]]
    assert plan_forwards(batch, 1000) == [[0, 2, 3], [1], [4]]


def test_a_clip_scores_the_same_alone_and_in_a_batch(handler, scorer):
    target = clip("target", 12, 10)
    alone = handler.run_inference([target], scorer)[0].inference
    batch = [clip("x", 12, 11), target, clip("y", 20, 12), clip("z", 12, 13)]
    inside = handler.run_inference(batch, scorer)[1]
    assert inside.example is target
    for key in ("logits", "probabilities", "rgb_embedding"):
        assert np.abs(inside.inference[key] - alone[key]).max() <= 1e-4, key
    assert alone["logits"].shape == (400,) and alone["rgb_embedding"].shape == (1024,)


def test_a_failing_clip_does_not_take_its_batch_mates_down(handler, scorer):
    good = clip("good", 12, 20)
    too_short = clip("short", 5, 21)  # the network needs 9 frames
    results = handler.run_inference([good, too_short], scorer)
    assert isinstance(results[1].inference, InferenceFailure)
    assert results[1].inference.error_type == too_short_error(scorer)
    assert "at least 9 frames" in results[1].inference.message
    alone = handler.run_inference([good], scorer)[0].inference
    np.testing.assert_allclose(results[0].inference["logits"], alone["logits"], atol=1e-4)


def test_score_clips_routes_failures_to_inference_errors(handler, scorer):
    examples = [clip("ok", 9, 30), clip("bad", 3, 31)]
    with BeamPipeline() as p:
        scores, errors = (p | beam.Create(examples)
                          | ScoreClips(handler, label_map(400), 3, embeddings=False))
        assert_that(scores | "ScoredIds" >> beam.Map(
            lambda r: (r["clip_id"], len(r["top_k"]), r.get("rgb_embedding") is None,
                       len(r["rgb_logits"]))),
            equal_to([("ok", 3, True, 400)]), label="scores")
        assert_that(errors | "ErrorIds" >> beam.Map(
            lambda e: (e["clip_id"], e["stage"], e["error_type"],
                       e["message"].startswith("mem://bad.mp4: I3D failed"))),
            equal_to([("bad", "inference", too_short_error(scorer), True)]), label="errors")


class FlakyDevice:
    """The real model behind a device that fails some forwards as a GPU does: out of
    memory for any forward of more than ``fits`` clips, and an error for any forward that
    holds the ``poison`` clip. Records the batch size of every forward it is asked for."""

    def __init__(self, scorer, fits: int, poison: np.ndarray | None = None):
        self.scorer, self.fits, self.poison = scorer, fits, poison
        self.calls: list[int] = []

    def backend_label(self) -> str:
        return self.scorer.backend_label()

    def score(self, inputs):
        import tensorflow as tf

        rgb = inputs["rgb"]
        self.calls.append(len(rgb))
        if len(rgb) > self.fits:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        if self.poison is not None and any(np.array_equal(x, self.poison) for x in rgb):
            # as TensorFlow words it: the cause, then the graph node it ran
            raise tf.errors.InternalError(None, None, "device kernel failed\n  [[{{node x}}]]")
        return self.scorer.score(inputs)


def test_a_batch_that_fails_is_retried_clip_by_clip(handler, scorer):
    # Same shapes, so the three clips share one forward; it fails, and each is retried.
    batch = [clip(f"s{i}", 12, 40 + i) for i in range(3)]
    device = FlakyDevice(scorer, fits=1)
    results = handler.run_inference(batch, device)
    assert device.calls == [3, 1, 1, 1]
    for example, result in zip(batch, results):
        assert result.example is example
        assert not isinstance(result.inference, InferenceFailure), result.inference
        alone = handler.run_inference([example], scorer)[0].inference
        np.testing.assert_allclose(result.inference["logits"], alone["logits"], atol=1e-4)


def test_only_the_clip_that_fails_alone_is_a_failure(handler, scorer):
    batch = [clip(f"p{i}", 12, 50 + i) for i in range(3)]
    device = FlakyDevice(scorer, fits=3, poison=batch[1].rgb)
    results = handler.run_inference(batch, device)
    assert device.calls == [3, 1, 1, 1]
    assert [r.example is b for r, b in zip(results, batch)] == [True] * 3
    assert isinstance(results[1].inference, InferenceFailure)
    assert results[1].inference.error_type == "InternalError"
    assert "device kernel failed" in results[1].inference.message
    assert results[1].inference == InferenceFailure("InternalError", "device kernel failed")
    for i in (0, 2):
        alone = handler.run_inference([batch[i]], scorer)[0].inference
        np.testing.assert_allclose(results[i].inference["logits"], alone["logits"], atol=1e-4)


def test_uint8_clips_score_as_their_unit_range_floats(scorer):
    levels = clip("u", 9, 1).rgb[None]
    as_levels = scorer.score({"rgb": levels})
    as_floats = scorer.score({"rgb": uint8_to_unit_range(levels)})
    assert sorted(as_levels) == ["logits", "probabilities", "rgb_embedding", "rgb_logits"]
    for key, value in as_levels.items():
        assert type(value) is np.ndarray and value.dtype == np.float32, key
        np.testing.assert_allclose(value, as_floats[key], rtol=0, atol=1e-6, err_msg=key)
    assert as_levels["logits"].shape == (1, 400) and scorer.num_classes == 400



def test_a_failed_forward_does_not_stop_the_forwards_after_it(handler, scorer):
    batch = [clip("short", 5, 2), clip("a", 9, 3), clip("b", 10, 4)]  # three shapes
    device = FlakyDevice(scorer, fits=3)
    results = handler.run_inference(batch, device)
    assert device.calls == [1, 1, 1]  # a single clip that fails is not tried again
    assert [r.example is b for r, b in zip(results, batch)] == [True] * 3
    assert results[0].inference == InferenceFailure(
        too_short_error(scorer), results[0].inference.message)
    assert "at least 9 frames" in results[0].inference.message
    for i in (1, 2):
        alone = scorer.score({"rgb": batch[i].rgb[None]})
        assert sorted(results[i].inference) == sorted(alone)
        np.testing.assert_allclose(results[i].inference["logits"], alone["logits"][0],
                                   rtol=0, atol=1e-4)
