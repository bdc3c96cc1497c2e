"""Batched I3D inference for Beam's RunInference: the model handler and the scorer.

:class:`I3DModelHandler` is a ``ModelHandler[ClipExample, PredictionResult, ClipScorer]``.
RunInference batches clips with ``BatchElements`` (at most ``max_batch_size`` clips a
batch); the handler then runs each group of clips of equal frame count as one forward of
at most ``max_batch_frames`` frames, and never pads, so a clip's result does not depend
on its batch-mates. Under ``--crops five|ten`` each crop of a clip is a network input of
its own (:mod:`beam_i3d.media.crops`, cut when the forward is stacked): the forwards
are planned over crops, ``max_batch_frames`` counting every crop's frames, and the
clip's outputs are then the mean over its crops (:func:`mean_over_crops`). The model is
loaded once per worker process and shared by its threads (RunInference's shared handle),
or, with ``model_copies``, once per machine and shared across processes (Beam's
``multi_process_shared``: one model per GPU).

The forwards run on a model backend (:mod:`beam_i3d.job.backends`, ``model_backend``
and ``precision``): TensorFlow, which places the ops on a GPU if there is one (the
handler turns on memory growth before the model loads: by default TensorFlow grabs the
whole card in every process), or OpenVINO on the CPU; ``auto`` picks per worker.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from beam_i3d.job.manifest import ClipRequest

_LOG = logging.getLogger(__name__)


class _NoResourceModuleWarning(logging.Filter):
    """Beam 2.77's RunInference imports ``resource`` together with its model manager,
    which needs PyTorch; without PyTorch it warns on every batch that it cannot measure
    memory. The warning says nothing about this job, so it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resource module is not available" not in record.getMessage()


logging.getLogger().addFilter(_NoResourceModuleWarning())


@dataclasses.dataclass
class ClipExample:
    """A decoded clip on its way to the model."""

    request: ClipRequest
    num_frames: int                      # real frames, before any looping
    rgb: np.ndarray | None = None        # [T,224,224,3] uint8
    flow: np.ndarray | None = None       # [T',224,224,2] uint8 or float32 in [-1,1]
    # --crops: "center", or "five"/"ten", when rgb and flow hold whole resized frames
    # ([T,H,W,3], [T',H,W,C]: see beam_i3d.media.crops) and each crop is an input
    crops: str = "center"

    def stream_arrays(self) -> dict[str, np.ndarray]:
        return {s: a for s, a in (("rgb", self.rgb), ("flow", self.flow)) if a is not None}

    def frames(self) -> int:
        """Frames the model will see (both streams): the clip's weight in a batch."""
        return sum(a.shape[0] for a in self.stream_arrays().values())

    def shape_key(self) -> tuple:
        return tuple((s, a.shape, a.dtype.str) for s, a in self.stream_arrays().items())

    def inputs(self) -> list:
        """The network inputs this clip makes: itself under ``center``, else one
        :class:`CropInput` per crop, in the documented order."""
        if self.crops == "center":
            return [self]
        from beam_i3d.media.crops import crop_count

        return [CropInput(self, k) for k in range(crop_count(self.crops))]


@dataclasses.dataclass(frozen=True)
class CropInput:
    """Crop ``index`` of a multi-crop :class:`ClipExample` as one network input (its
    arrays cut only when a forward is stacked, :meth:`stream_arrays`)."""

    example: ClipExample
    index: int

    def stream_arrays(self) -> dict[str, np.ndarray]:
        from beam_i3d.media.crops import crop_stream

        return {s: crop_stream(s, a, self.example.crops, self.index)
                for s, a in self.example.stream_arrays().items()}

    def frames(self) -> int:
        return self.example.frames()

    def shape_key(self) -> tuple:
        # Every crop is 224x224: crops of clips of any frame size run together.
        from beam_i3d.media.recipe import CROP_SIZE

        return tuple((s, (a.shape[0], CROP_SIZE, CROP_SIZE, 3 if s == "rgb" else 2),
                      a.dtype.str) for s, a in self.example.stream_arrays().items())


@dataclasses.dataclass(frozen=True)
class InferenceFailure:
    """Stands in for the model outputs of a clip whose forward failed."""

    error_type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> "InferenceFailure":
        """From an exception; TensorFlow's graph trace boilerplate is left out."""
        text = getattr(error, "message", None) or str(error)
        lines = [line.strip() for line in text.splitlines()]
        kept = [line for line in lines if line and not (
            line.startswith(("Graph execution error", "Detected at node", "File \"",
                             "[[{{node"))) ]
        message = " ".join(kept)[:2000]
        return cls(type(error).__name__, message or type(error).__name__)


def configure_tensorflow(allow_tf32: bool = False) -> None:
    """Process-wide TensorFlow settings for a worker; call before the first TF op.

    GPU memory growth on: by default TensorFlow takes the whole card in every process,
    and a worker machine runs several (the SDK processes, each with its flow backend,
    and the shared model). TensorFloat-32 (on by default for Ampere and newer GPUs)
    rounds convolution and matmul inputs to 10-bit mantissas (float32 keeps 23): faster,
    but the outputs drift from the published model's, by an amount not yet measured
    (no GPU in our test setup); off unless ``allow_tf32``.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # GPUs already initialised in this process: nothing to do
            pass
    tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)


class ClipScorer:
    """The loaded I3D model behind a numpy-in, numpy-out method.

    Plain arrays in and out keep it usable through Beam's multi-process sharing, where
    calls cross a process boundary. The forwards run on the backend that
    ``model_backend`` and ``precision`` resolve to here (:mod:`beam_i3d.job.backends`).
    """

    def __init__(self, rgb_checkpoint: str | None, flow_checkpoint: str | None,
                 allow_tf32: bool = False, require_gpu: bool = False,
                 model_backend: str = "auto", precision: str = "f32"):
        from beam_i3d.job.backends import load_backend
        from model.export import build_model

        if require_gpu:
            from beam_i3d.job.gpu import ensure_gpu

            ensure_gpu()  # before the weights load: fail in seconds, not after them
        configure_tensorflow(allow_tf32)
        # On a machine with several GPUs, each loading process (a model copy, or a
        # worker's own model) takes a GPU of its own (beam_i3d.job.devices); the weights
        # are placed there and the forwards run there.
        self._device = gpu_for_this_model(model_backend, precision)
        with _on_device(self._device):
            model = build_model(rgb_checkpoint, flow_checkpoint)
        self._num_classes = model.num_classes
        self.backend = load_backend(model, model_backend, precision)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def backend_label(self) -> str:
        """What runs the forwards, e.g. ``openvino_f32`` (a counter's name suffix)."""
        return f"{self.backend.name}_{self.backend.precision}"

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stacked clips of one shape -> model outputs as numpy arrays.

        Args:
          inputs: ``rgb`` ``[B,T,224,224,3]`` and/or ``flow`` ``[B,T',224,224,2]``;
            uint8 in [0,255] or float32 in [-1,1] each.
        Returns:
          ``logits``, ``probabilities`` ``[B,C]``; ``<stream>_logits`` ``[B,C]``,
          ``<stream>_embedding`` ``[B,1024]`` float32.
        """
        with _on_device(self._device):
            return self.backend.score(inputs)


def gpu_for_this_model(model_backend: str, precision: str) -> str | None:
    """The GPU this process's model goes on where TensorFlow sees several and the
    model runs on TensorFlow (:func:`beam_i3d.job.devices.claim_device`); else None
    (TensorFlow's own placement: its first GPU, or the CPU)."""
    if model_backend == "openvino" or precision != "f32":
        return None
    import tensorflow as tf

    from beam_i3d.job.devices import claim_device

    return claim_device([d.name for d in tf.config.list_logical_devices("GPU")])


def _on_device(device: str | None):
    import contextlib

    if device is None:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device(device)


class I3DModelHandler(ModelHandler[ClipExample, PredictionResult, ClipScorer]):
    """RunInference's handler for I3D on decoded clips (see module doc)."""

    def __init__(
        self,
        rgb_checkpoint: str | None = "default",
        flow_checkpoint: str | None = None,
        *,
        max_batch_size: int = 8,
        max_batch_frames: int = 2000,
        model_copies: int | None = None,
        allow_tf32: bool = False,
        require_gpu: bool = False,
        model_backend: str = "auto",
        precision: str = "f32",
    ):
        """
        Args:
          rgb_checkpoint, flow_checkpoint: checkpoint specs of the streams to run
            (``default``, a prefix or a directory, local or remote); None skips a stream.
          max_batch_size: most clips in one batch.
          max_batch_frames: most frames (both streams together) in one forward, so a
            batch of long clips cannot exhaust GPU memory. A single clip over the cap
            still runs, alone.
          model_copies: when set, load this many copies per machine, shared across
            processes (one per GPU); when None, one model per worker process.
          allow_tf32: let GPUs use TensorFloat-32 (see :func:`configure_tensorflow`).
          require_gpu: fail loading the model (GPUUnavailable, which fails the job)
            when TensorFlow sees no GPU, instead of scoring on the CPU.
          model_backend, precision: what runs the forwards (``auto``, ``tf`` or
            ``openvino``; ``f32`` or ``bf16``), see :mod:`beam_i3d.job.backends`.
        """
        if max_batch_size < 1 or max_batch_frames < 1:
            raise ValueError("max_batch_size and max_batch_frames must be at least 1")
        # The frame cap is applied per forward (plan_forwards), not by BatchElements:
        # Beam 2.77's ModelHandler accepts max_batch_weight but passes it to a
        # BatchElements that does not take it.
        super().__init__(min_batch_size=1, max_batch_size=max_batch_size,
                         model_copies=model_copies)
        self.rgb_checkpoint = rgb_checkpoint
        self.flow_checkpoint = flow_checkpoint
        self.max_batch_frames = max_batch_frames
        self.allow_tf32 = allow_tf32
        self.require_gpu = require_gpu
        self.model_backend = model_backend
        self.precision = precision
        self._backend_label = None

    def load_model(self) -> ClipScorer:
        return ClipScorer(self.rgb_checkpoint, self.flow_checkpoint, self.allow_tf32,
                          require_gpu=self.require_gpu, model_backend=self.model_backend,
                          precision=self.precision)

    def run_inference(self, batch: Sequence[ClipExample], model: ClipScorer,
                      inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        """Score a batch; a forward that fails (e.g. out of memory) is retried input by
        input, and a clip whose input (or one of its crops) still fails gets an
        :class:`InferenceFailure` as its inference, so the rest of the batch is
        unaffected. Multi-crop clips: each crop is an input, and the clip's inference
        is :func:`mean_over_crops` of its crops' outputs."""
        if self._backend_label is None:  # the same model for this handler's life
            self._backend_label = model.backend_label()
        # What ran, per worker: the counter forwards_<backend>_<precision>.
        forwards = Metrics.counter(self.get_metrics_namespace(),
                                   f"forwards_{self._backend_label}")
        inputs, owner = [], []  # the network inputs, and the clip each belongs to
        for i, example in enumerate(batch):
            units = example.inputs()
            inputs += units
            owner += [i] * len(units)
        outputs: list[Any] = [None] * len(inputs)  # per input: its outputs, or a failure
        for indices in plan_forwards(inputs, self.max_batch_frames):
            try:
                forwards.inc()
                self._forward(inputs, indices, model, outputs)
            except Exception as e:  # noqa: BLE001: isolate the failing clip(s)
                if len(indices) == 1:
                    outputs[indices[0]] = InferenceFailure.of(e)
                    continue
                _LOG.warning("a forward of %d inputs failed (%s); retrying one by one",
                             len(indices), type(e).__name__)
                for i in indices:
                    try:
                        self._forward(inputs, [i], model, outputs)
                    except Exception as single:  # noqa: BLE001
                        outputs[i] = InferenceFailure.of(single)
        results: list[PredictionResult] = []
        for i, example in enumerate(batch):
            mine = [out for out, o in zip(outputs, owner) if o == i]
            failed = next((out for out in mine if isinstance(out, InferenceFailure)), None)
            if failed is not None:
                inference = failed
            elif example.crops == "center":
                inference = mine[0]
            else:
                inference = mean_over_crops(mine)
            results.append(PredictionResult(example=example, inference=inference))
        return results

    @staticmethod
    def _forward(inputs, indices, model, outputs) -> None:
        # Each input's arrays once: a crop's are cut by stream_arrays (a copy per call).
        per_input = [inputs[i].stream_arrays() for i in indices]
        arrays = {stream: np.stack([a[stream] for a in per_input]) for stream in per_input[0]}
        scored = model.score(arrays)
        for row, i in enumerate(indices):
            outputs[i] = {k: v[row] for k, v in scored.items()}

    def get_num_bytes(self, batch: Sequence[ClipExample]) -> int:
        return sum(a.nbytes for ex in batch for a in ex.stream_arrays().values())

    def get_metrics_namespace(self) -> str:
        from beam_i3d.job.progress import NAMESPACE

        return NAMESPACE


def mean_over_crops(outputs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One clip's inference from its crops' model outputs (the usual multi-crop test):
    ``logits`` and each ``<stream>_logits`` the mean over the crops (float32),
    ``probabilities`` the softmax of that mean ``logits``, each ``<stream>_embedding`` the
    mean of the crops' embeddings, and ``<stream>_crop_embeddings`` ``[crops, 1024]`` the
    crops' own, in the crops' order."""
    out: dict[str, np.ndarray] = {}
    for name in outputs[0]:
        if name == "probabilities":
            continue
        stacked = np.stack([np.asarray(o[name], np.float32) for o in outputs])
        out[name] = stacked.mean(axis=0, dtype=np.float64).astype(np.float32)
        if name.endswith("_embedding"):
            out[name[:-len("_embedding")] + "_crop_embeddings"] = stacked
    logits = out["logits"].astype(np.float64)
    e = np.exp(logits - logits.max())
    out["probabilities"] = (e / e.sum()).astype(np.float32)
    return out


def plan_forwards(batch: Sequence[ClipExample], max_batch_frames: int) -> list[list[int]]:
    """Split a batch into forwards: clips (or crops, :class:`CropInput`) of equal shapes
    together, in runs of at most ``max_batch_frames`` frames (a longer one runs alone).
    Returns index lists."""
    groups: dict[tuple, list[int]] = {}
    for i, example in enumerate(batch):
        groups.setdefault(example.shape_key(), []).append(i)
    plan = []
    for indices in groups.values():
        current, frames = [], 0
        for i in indices:
            f = batch[i].frames()
            if current and frames + f > max_batch_frames:
                plan.append(current)
                current, frames = [], 0
            current.append(i)
            frames += f
        plan.append(current)
    return plan
