"""The rows of the outputs, built from what a step learned about one clip: an errors row
from an exception (:func:`error_record`, :func:`request_error`), from a failed forward
(:func:`inference_failure_record`, :func:`inference_errors`), a scores row from a
clip's model outputs (:func:`score_record`), and any record completed to its schema
(:func:`complete_record`). Every step that writes a row, in ``score``, its windowed mode
and ``fvd``, builds it here, so a row means the same wherever it comes from (the
schemas: :mod:`schemas`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from beam_i3d.errors import BeamI3DError
from beam_i3d.job.windows import window_text

if TYPE_CHECKING:
    from beam_i3d.job.inference import ClipExample, InferenceFailure
    from beam_i3d.job.manifest import ClipRequest


def error_record(stage: str, error: BaseException, clip_id: str | None = None,
                 video_uri: str | None = None, source: str | None = None,
                 row_key: str | None = None) -> dict:
    """One row of the errors output; ``error_type`` is the exception's class name
    (or, for an error that crossed a process boundary, the original one's)."""
    message = str(error) or type(error).__name__
    error_type = getattr(error, "error_type", None) or type(error).__name__
    if not isinstance(error, BeamI3DError):
        # Not one of ours: say it was unexpected and name the clip, which the
        # library's own message usually does not.
        message = f"{video_uri or clip_id}: unexpected {error_type}: {message}"
    return {"clip_id": clip_id, "video_uri": video_uri, "stage": stage,
            "error_type": error_type, "message": message, "source": source,
            "row_key": row_key}


def request_error(stage: str, error: BaseException, request: ClipRequest) -> dict:
    """The errors row of a request; a window's message starts by naming the window."""
    record = error_record(stage, error, request.clip_id, request.video_uri, request.source,
                          request.row_key)
    if request.window is not None:
        record["message"] = f"{window_text(*request.window[:3])}: {record['message']}"
    return record


def inference_failure_record(failure: InferenceFailure, request: ClipRequest) -> dict:
    """The errors row of a clip whose forward failed (see the model handler)."""
    what = ("this clip" if request.window is None
            else f"{window_text(*request.window[:3])}")
    return {"clip_id": request.clip_id, "video_uri": request.video_uri,
            "stage": "inference", "error_type": failure.error_type,
            "message": f"{request.video_uri}: I3D failed on {what}: {failure.message}",
            "source": request.source, "row_key": request.row_key}


def complete_record(record: Mapping[str, Any], schema) -> dict:
    """The record with every schema field (absent nullable ones as None).

    Raises ValueError naming the required fields that are missing.
    """
    names, required = _field_names(schema)
    missing = [name for name in required if record.get(name) is None]
    if missing:
        raise ValueError(f"record for {record.get('clip_id')!r} lacks required {missing}")
    return {name: record.get(name) for name in names}


# id(schema) -> (schema, its field names, the required ones). Reading a pyarrow schema's
# fields builds a Field object each time (about 10 us a record); a writer completes
# every record with the same schema object, kept here so that its id stays its own.
_FIELD_NAMES: dict[int, tuple] = {}


def _field_names(schema) -> tuple[tuple[str, ...], tuple[str, ...]]:
    entry = _FIELD_NAMES.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_FIELD_NAMES) >= 64:
            _FIELD_NAMES.clear()
        fields = list(schema)
        entry = _FIELD_NAMES[id(schema)] = (
            schema, tuple(f.name for f in fields), tuple(f.name for f in fields if not f.nullable))
    return entry[1], entry[2]


def inference_errors(failed) -> Iterable[dict]:
    """RunInference's dead letters ``(batch, exception)`` -> one error row per clip."""
    batch, exception = failed
    examples = batch if isinstance(batch, (list, tuple)) else [batch]
    for example in examples:
        request = example.request
        yield request_error("inference", exception, request)


def scored_request(request: ClipRequest, range_end_sec: float | None) -> ClipRequest:
    """The request as scored: its ``end_sec`` the end of the range actually scored,
    ``min(end_sec, range_end_sec)`` (a video's frames may end before the row's end); a
    row without an end keeps None (to the end of the video), and so does any row where
    ``range_end_sec`` is None (not known)."""
    if request.end_sec is None or range_end_sec is None or range_end_sec >= request.end_sec:
        return request
    return dataclasses.replace(request, end_sec=float(range_end_sec))


def score_record(example: ClipExample, outputs: Mapping[str, np.ndarray],
                 labels: Sequence[str], top_k: int, embeddings: bool) -> dict:
    """One row of the scores output from a clip and its model outputs (see schemas);
    ``start_sec``/``end_sec`` are its request's (the decode step gives the range scored:
    :func:`scored_request`)."""
    logits = np.asarray(outputs["logits"], np.float32)
    probabilities = np.asarray(outputs["probabilities"], np.float32)
    best = np.argsort(-logits, kind="stable")[:top_k]
    request = example.request
    record = {
        "clip_id": request.clip_id,
        "video_uri": request.video_uri,
        "start_sec": request.start_sec,
        "end_sec": request.end_sec,
        "label": request.label,
        "row_key": request.row_key,
        "num_frames": int(example.num_frames),
        "predicted_label": labels[best[0]],
        "predicted_index": int(best[0]),
        "predicted_probability": float(probabilities[best[0]]),
        "top_k": [{"label": labels[i], "index": int(i), "probability": float(probabilities[i]),
                   "logit": float(logits[i])} for i in best],
        "logits": logits.tolist(),
    }
    if request.window is not None:
        index, start, end, count = request.window
        record.update(window_index=index, window_start_sec=start, window_end_sec=end,
                      num_windows=count)
    for stream in ("rgb", "flow"):
        if f"{stream}_logits" in outputs:
            record[f"{stream}_logits"] = np.asarray(outputs[f"{stream}_logits"],
                                                    np.float32).tolist()
            if embeddings:
                record[f"{stream}_embedding"] = np.asarray(
                    outputs[f"{stream}_embedding"], np.float32).tolist()
                crops = outputs.get(f"{stream}_crop_embeddings")  # --crops five|ten
                if crops is not None:  # [crops, 1024], crop-major in one list
                    record[f"{stream}_crop_embeddings"] = np.asarray(
                        crops, np.float32).reshape(-1).tolist()
    return record
