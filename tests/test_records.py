"""The rows every step builds from what it learned about one clip (beam_i3d.job.records):
errors rows from exceptions and failed forwards, with the window named in a windowed run,
and records completed to their schema."""

from __future__ import annotations

import pyarrow as pa
import pytest

from beam_i3d.errors import CorruptVideo
from beam_i3d.job.inference import ClipExample, InferenceFailure
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.job.records import (complete_record, error_record, inference_errors,
                                  inference_failure_record, request_error)

CLIP = ClipRequest("a", "/v/a.mp4", None, None, None, "m.csv:2", row_key="a")
WINDOW = ClipRequest("a", "/v/a.mp4", None, None, None, "m.csv:2", row_key="a@w3",
                     window=(3, 30.0, 40.0, 7))


def test_error_record_keeps_our_messages_and_names_the_clip_in_others():
    ours = error_record("decode", CorruptVideo("/v/a.mp4", "broken header"), "a", "/v/a.mp4",
                        "m.csv:2", "a")
    assert ours == {"clip_id": "a", "video_uri": "/v/a.mp4", "stage": "decode",
                    "error_type": "CorruptVideo", "message": "/v/a.mp4: broken header",
                    "source": "m.csv:2", "row_key": "a"}
    other = error_record("inference", KeyError("logits"), "b", "/v/b.mp4")
    assert (other["error_type"], other["message"]) == (
        "KeyError", "/v/b.mp4: unexpected KeyError: 'logits'")
    assert (other["source"], other["row_key"]) == (None, None)
    no_uri = error_record("decode", RuntimeError(), "c")
    assert no_uri["message"] == "c: unexpected RuntimeError: RuntimeError"
    crossed = CorruptVideo("/v/d.mp4", "crashed")
    crossed.error_type = "DecoderCrashed"  # the original class, from a child process
    assert error_record("decode", crossed, "d")["error_type"] == "DecoderCrashed"


def test_request_error_names_the_window_of_a_windowed_request():
    error = CorruptVideo("/v/a.mp4", "broken packet")
    assert request_error("decode", error, CLIP) == {
        "clip_id": "a", "video_uri": "/v/a.mp4", "stage": "decode",
        "error_type": "CorruptVideo", "message": "/v/a.mp4: broken packet",
        "source": "m.csv:2", "row_key": "a"}
    windowed = request_error("decode", error, WINDOW)
    assert windowed["message"] == "window 3 [30 s, 40 s): /v/a.mp4: broken packet"
    assert (windowed["row_key"], windowed["stage"]) == ("a@w3", "decode")


def test_inference_failure_record_says_what_failed_on_which_clip_or_window():
    failure = InferenceFailure("ResourceExhaustedError", "OOM when allocating tensor")
    assert inference_failure_record(failure, CLIP) == {
        "clip_id": "a", "video_uri": "/v/a.mp4", "stage": "inference",
        "error_type": "ResourceExhaustedError",
        "message": "/v/a.mp4: I3D failed on this clip: OOM when allocating tensor",
        "source": "m.csv:2", "row_key": "a"}
    windowed = inference_failure_record(failure, WINDOW)
    assert windowed["message"] == ("/v/a.mp4: I3D failed on window 3 [30 s, 40 s): "
                                   "OOM when allocating tensor")
    assert windowed["row_key"] == "a@w3"


def test_inference_errors_give_one_row_per_clip_of_a_failed_batch():
    other = ClipRequest("b", "/v/b.mp4", None, None, None, "m.csv:3", row_key="b")
    batch = [ClipExample(request=CLIP, num_frames=9), ClipExample(request=other, num_frames=9)]
    rows = list(inference_errors((batch, RuntimeError("device lost"))))
    assert [(r["row_key"], r["stage"], r["error_type"]) for r in rows] == [
        ("a", "inference", "RuntimeError"), ("b", "inference", "RuntimeError")]
    assert rows[1]["message"] == "/v/b.mp4: unexpected RuntimeError: device lost"
    # A batch of one may come as the example itself.
    single = list(inference_errors((batch[0], RuntimeError("x"))))
    assert [r["row_key"] for r in single] == ["a"]


def test_complete_record_fills_nullable_fields_and_refuses_missing_required_ones():
    schema = pa.schema([pa.field("clip_id", pa.string(), nullable=False),
                        pa.field("n", pa.int32(), nullable=False),
                        pa.field("note", pa.string())])
    assert complete_record({"clip_id": "a", "n": 0, "extra": 1}, schema) == {
        "clip_id": "a", "n": 0, "note": None}
    with pytest.raises(ValueError, match=r"record for 'a' lacks required \['n'\]"):
        complete_record({"clip_id": "a", "n": None}, schema)
    with pytest.raises(ValueError, match=r"lacks required \['clip_id', 'n'\]"):
        complete_record({}, schema)


def test_complete_record_reads_each_schema_object_once_and_never_a_stale_one():
    """The field names are remembered per schema object (by id, the object kept): a new
    object that reuses a dead one's id gets its own fields, and the memory is bounded."""
    from beam_i3d.job import records

    old = pa.schema([pa.field("clip_id", pa.string())])
    new = pa.schema([pa.field("clip_id", pa.string()), pa.field("n", pa.int32(), nullable=False)])
    # as if ``new`` had the id of ``old``, now dead: its own fields must be read
    records._FIELD_NAMES[id(new)] = (old, ("clip_id",), ())
    with pytest.raises(ValueError, match=r"lacks required \['n'\]"):
        complete_record({"clip_id": "a"}, new)
    assert complete_record({"clip_id": "a", "n": 1}, new) == {"clip_id": "a", "n": 1}
    schemas = [pa.schema([pa.field(f"f{i}", pa.int32())]) for i in range(100)]
    for i, schema in enumerate(schemas):
        assert complete_record({}, schema) == {f"f{i}": None}
        assert len(records._FIELD_NAMES) <= 64


def test_score_record_holds_the_request_the_streams_and_the_window():
    import numpy as np

    from beam_i3d.job.records import score_record

    labels = [f"label{i}" for i in range(4)]
    logits = np.array([0.5, 2.0, -1.0, 1.0], np.float32)
    probabilities = np.array([0.1, 0.6, 0.05, 0.25], np.float32)
    outputs = {"logits": logits, "probabilities": probabilities,
               "rgb_logits": logits - 1, "rgb_embedding": np.arange(3, dtype=np.float32),
               "flow_logits": logits + 1, "flow_embedding": np.ones(3, np.float32)}
    request = ClipRequest("a", "/v/a.mp4", 1.5, 4.0, "juggling", "m.csv:2", row_key="a")
    row = score_record(ClipExample(request=request, num_frames=61), outputs, labels, 2,
                       embeddings=True)
    assert row == {
        "clip_id": "a", "video_uri": "/v/a.mp4", "start_sec": 1.5, "end_sec": 4.0,
        "label": "juggling", "row_key": "a", "num_frames": 61,
        "predicted_label": "label1", "predicted_index": 1,
        "predicted_probability": float(np.float32(0.6)),
        "top_k": [{"label": "label1", "index": 1, "probability": float(np.float32(0.6)),
                   "logit": 2.0},
                  {"label": "label3", "index": 3, "probability": 0.25, "logit": 1.0}],
        "logits": [0.5, 2.0, -1.0, 1.0],
        "rgb_logits": [-0.5, 1.0, -2.0, 0.0], "rgb_embedding": [0.0, 1.0, 2.0],
        "flow_logits": [1.5, 3.0, 0.0, 2.0], "flow_embedding": [1.0, 1.0, 1.0]}
    assert all(type(v) is float for v in row["rgb_logits"] + row["flow_embedding"])
    # Without embeddings, and for one stream only: only what was computed is there.
    rgb_only = {k: v for k, v in outputs.items() if not k.startswith("flow")}
    row = score_record(ClipExample(request=WINDOW, num_frames=250), rgb_only, labels, 1,
                       embeddings=False)
    assert "rgb_embedding" not in row and "flow_logits" not in row
    assert row["rgb_logits"] == [-0.5, 1.0, -2.0, 0.0]
    assert (row["window_index"], row["window_start_sec"], row["window_end_sec"],
            row["num_windows"]) == (3, 30.0, 40.0, 7)
    assert (row["row_key"], row["start_sec"], row["end_sec"], row["label"]) == (
        "a@w3", None, None, None)
    assert [t["index"] for t in row["top_k"]] == [1]
    plain = score_record(ClipExample(request=CLIP, num_frames=9), rgb_only, labels, 1, False)
    assert not {"window_index", "window_start_sec", "window_end_sec", "num_windows"} & set(plain)


def test_score_record_rounds_every_output_to_float32_as_the_schema_stores_them():
    import numpy as np

    from beam_i3d.job.records import score_record

    wide = np.array([0.1, 0.7, 0.3], np.float64)  # none is a float32 value
    outputs = {"logits": wide, "probabilities": wide / 2, "rgb_logits": wide + 1,
               "rgb_embedding": wide * 3}
    row = score_record(ClipExample(request=CLIP, num_frames=9), outputs, ["x", "y", "z"], 3,
                       embeddings=True)

    def f32(values):
        return [float(v) for v in np.asarray(values, np.float32)]

    assert row["logits"] == f32(wide) and row["rgb_logits"] == f32(wide + 1)
    assert row["rgb_embedding"] == f32(wide * 3)
    assert [t["logit"] for t in row["top_k"]] == f32(wide[[1, 2, 0]])
    assert [t["probability"] for t in row["top_k"]] == f32(wide[[1, 2, 0]] / 2)
    assert row["predicted_probability"] == f32([0.35])[0]
