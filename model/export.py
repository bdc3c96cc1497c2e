"""The two-stream I3D model as one ``tf.Module``, and its SavedModel export.

:class:`I3DModel` holds an RGB and/or a flow :class:`~model.i3d.InceptionI3d` and gives
the outputs the rest of the project (and the SavedModel's users) rely on:

* ``logits`` ``[B, C]``: the sum of the streams' logits (the release's joint model adds
  them with equal weight), ``probabilities`` ``[B, C]``: its softmax;
* per stream: ``rgb_logits`` / ``flow_logits`` ``[B, C]`` and ``rgb_embedding`` /
  ``flow_embedding`` ``[B, 1024]`` (Mixed_5c averaged over time, height and width).

Two entry points, each traced once for dynamic B and T:

* ``serving_default``: ``rgb`` float32 ``[B, T, 224, 224, 3]`` and/or ``flow`` float32
  ``[B, T', 224, 224, 2]``, values in [-1, 1];
* ``serving_uint8``: the same tensors as uint8 in [0, 255]; mapped to [-1, 1] as
  ``x / 255 * 2 - 1`` in float32 inside the model. This is what the pipeline feeds: a
  uint8 clip is 4x less host memory and host-to-device traffic than float32.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Mapping

import tensorflow as tf

from model import storage
from model.i3d import EMBEDDING_SIZE, INPUT_SIZE, InceptionI3d, uint8_to_unit_range
from model.inputs import STREAM_CHANNELS, STREAMS
from model.labels import label_map, label_map_name



def _spec(stream: str, dtype: tf.DType) -> tf.TensorSpec:
    return tf.TensorSpec([None, None, INPUT_SIZE, INPUT_SIZE, STREAM_CHANNELS[stream]],
                         dtype, name=stream)


class I3DModel(tf.Module):
    """One or two I3D streams with joint outputs (see module doc)."""

    def __init__(self, streams: Mapping[str, InceptionI3d],
                 sources: Mapping[str, str] | None = None):
        super().__init__(name="i3d")
        if not streams or set(streams) - set(STREAMS):
            raise ValueError(f"streams must be a non-empty subset of {STREAMS}, got {list(streams)}")
        classes = {net.num_classes for net in streams.values()}
        if len(classes) != 1:
            raise ValueError(
                "the streams' class counts differ ("
                + ", ".join(f"{s}: {n.num_classes}" for s, n in streams.items())
                + "); joint logits need one label set")
        self.stream_names = tuple(s for s in STREAMS if s in streams)
        self.num_classes = classes.pop()
        self.rgb = streams.get("rgb")
        self.flow = streams.get("flow")
        self.sources = dict(sources or {})
        signature = {s: _spec(s, tf.float32) for s in self.stream_names}
        signature_uint8 = {s: _spec(s, tf.uint8) for s in self.stream_names}
        # One traced function per input signature: B and T are dynamic, so no retracing.
        self.predict = tf.function(self._predict, input_signature=[signature])
        self.predict_uint8 = tf.function(self._predict_uint8, input_signature=[signature_uint8])

    def _predict(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = {}
        for stream in self.stream_names:
            result = getattr(self, stream)(inputs[stream])
            outputs[f"{stream}_logits"] = result["logits"]
            outputs[f"{stream}_embedding"] = result["embedding"]
        logits = tf.add_n([outputs[f"{s}_logits"] for s in self.stream_names])
        outputs["logits"] = logits
        outputs["probabilities"] = tf.nn.softmax(logits)
        return outputs

    def _predict_uint8(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self._predict({s: uint8_to_unit_range(x) for s, x in inputs.items()})

    @property
    def labels(self) -> tuple[str, ...]:
        return label_map(self.num_classes)

    def metadata(self) -> dict[str, str]:
        """What the model is, for output metadata and the SavedModel's assets."""
        return {
            "streams": ",".join(self.stream_names),
            "num_classes": str(self.num_classes),
            "label_map": label_map_name(self.num_classes),
            **{f"{s}_checkpoint": self.sources.get(s, "") for s in self.stream_names},
        }


def build_model(rgb_checkpoint: str | None = None,
                flow_checkpoint: str | None = None) -> I3DModel:
    """Load the requested streams from checkpoint specs (``default``, prefix, dir, URI)."""
    from model.weights import load_stream

    specs = {"rgb": rgb_checkpoint, "flow": flow_checkpoint}
    streams, sources = {}, {}
    for stream, spec in specs.items():
        if spec:
            streams[stream], _ = load_stream(spec, stream)
            sources[stream] = spec
    if not streams:
        raise ValueError("give at least one of rgb_checkpoint and flow_checkpoint")
    return I3DModel(streams, sources)


def export_saved_model(model: I3DModel, out_dir: str, beam_i3d_version: str | None = None
                       ) -> str:
    """Write ``model`` as a SavedModel (signatures ``serving_default``, ``serving_uint8``).

    The label map goes along as ``assets.extra/labels.txt`` and the model description
    as ``assets.extra/beam_i3d.json``; ``tf.saved_model.load`` needs neither this project
    nor its code. ``out_dir`` may be local or any URI Beam's FileSystems write (gs://).
    ``beam_i3d_version``, where given (``beam-i3d export`` gives its own), is recorded in
    the description as ``beam_i3d_version``.
    """
    if not storage.is_local(out_dir):
        with tempfile.TemporaryDirectory(prefix="beam-i3d-export-") as tmp:
            export_saved_model(model, tmp, beam_i3d_version)
            storage.upload_tree(tmp, out_dir)
        return out_dir
    out_dir = storage.local_path(out_dir)
    tf.saved_model.save(
        model, out_dir,
        signatures={
            "serving_default": model.predict.get_concrete_function(),
            "serving_uint8": model.predict_uint8.get_concrete_function(),
        },
    )
    assets = os.path.join(out_dir, "assets.extra")  # TF Serving's place for extra files
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(model.labels) + "\n")
    with open(os.path.join(assets, "beam_i3d.json"), "w", encoding="utf-8") as f:
        version = {} if beam_i3d_version is None else {"beam_i3d_version": beam_i3d_version}
        json.dump({**model.metadata(), **version, "embedding_size": EMBEDDING_SIZE}, f,
                  indent=2)
    return out_dir
