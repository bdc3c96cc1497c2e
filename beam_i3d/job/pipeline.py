"""The scoring job: manifests in, batched I3D RunInference, Parquet out.

    read manifests -> parse rows -> drop repeats (and, resuming, clips already done)
      -> decode + preprocess -> RunInference(I3DModelHandler)
      -> fuse streams, softmax, top-k -> WriteShards(DIR/scores)
    every failure on the way ------------------------------> WriteShards(DIR/errors)

Every manifest row ends in exactly one of the two outputs, under its ``row_key``
(:mod:`beam_i3d.job.row_keys`), decided once per row by :mod:`beam_i3d.job.routing`;
the shards are written while the job runs (:mod:`beam_i3d.job.shards`), so a job that
dies keeps what it finished, and the launcher checks the counts at the end
(:mod:`beam_i3d.job.verify`). The numeric work lives in plain functions elsewhere
(``beam_i3d.media.preprocess``, ``model/``); this module holds the thin DoFns and
composite transforms around them, and :func:`build_pipeline`.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_i3d import __version__, fileio as bfileio
from beam_i3d.errors import VideoError
from beam_i3d.job.inference import ClipExample, I3DModelHandler, InferenceFailure
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.job.pooled import PoolDoFn
from beam_i3d.job.records import (complete_record, inference_errors, inference_failure_record,
                                   request_error, score_record, scored_request)
from beam_i3d.job.routing import ReadClipRequests
from beam_i3d.job.score_options import ScoreOptions
from beam_i3d.job.shards import WriteShards
from beam_i3d.job.progress import NAMESPACE
from beam_i3d.media.video import error_before_opening
from schemas import (ERRORS_SCHEMA, PLANS_SCHEMA, SCORES_SCHEMA, TIMELINES_SCHEMA,
                     WINDOWS_SCHEMA, with_run_metadata)

_LOG = logging.getLogger(__name__)


def new_run_id() -> str:
    """A name for this run's part files: UTC time and a random suffix."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


# --- Decoding ----------------------------------------------------------------------------------


class DecodeClip(PoolDoFn):
    """ClipRequest -> ClipExample (uint8 tensors of the requested streams); failures to
    the ``errors`` output with stage ``decode``.

    Clips are decoded in child processes (:class:`beam_i3d.media.decode_pool.DecodePool`,
    ``options.decode_processes`` of them, default one per CPU), so that a file that
    crashes, hangs or exhausts FFmpeg costs only its own clip; :class:`PoolDoFn` says
    how many are in flight. tf flow runs in this process.
    """

    def __init__(self, options: ScoreOptions):
        super().__init__(options)
        self._streams = tuple(options.streams)
        self._max_seconds = options.max_seconds
        self._quantize_flow = options.quantize_flow
        self._flow_backend = options.flow_backend
        self._flow_batch_pairs = options.flow_batch_pairs
        self._allow_tf32 = options.allow_tf32
        self._crops = options.crops
        self._clips = Metrics.counter(NAMESPACE, "clips_decoded")
        self._frames = Metrics.counter(NAMESPACE, "frames_decoded")
        self._failed = Metrics.counter(NAMESPACE, "decode_errors")
        self._millis = Metrics.distribution(NAMESPACE, "decode_ms")

    def setup(self):
        if "flow" in self._streams and self._flow_backend == "tf":
            # The tf flow backend runs TensorFlow (on the GPU, if any) in this process.
            from beam_i3d.job.inference import configure_tensorflow

            configure_tensorflow(self._allow_tf32)
        super().setup()

    def process(self, request: ClipRequest, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        # A local file that does not exist fails here, as it would in a child (the same
        # VideoNotFound), for one stat instead of a round trip through the pool.
        missing = error_before_opening(request.video_uri, request.start_sec,
                                       request.end_sec, self._max_seconds)
        if missing is not None:
            yield from self.outputs(request, missing, 0.0)
            return
        yield from self.submit(request, timestamp, window, lambda key: self._pool.submit(
            key, request.video_uri, request.start_sec, request.end_sec,
            streams=self._streams, max_seconds=self._max_seconds,
            quantize_flow=self._quantize_flow, flow_backend=self._flow_backend,
            flow_batch_pairs=self._flow_batch_pairs, crops=self._crops))

    def outputs(self, request: ClipRequest, result, seconds: float):
        if isinstance(result, BaseException):
            self._failed.inc()
            Metrics.counter(NAMESPACE, f"decode_errors_{type(result).__name__}").inc()
            if not isinstance(result, VideoError):
                _LOG.warning("unexpected error decoding %s: %s: %s", request.video_uri,
                             type(result).__name__, result)
            yield beam.pvalue.TaggedOutput(self.ERRORS, request_error("decode", result, request))
            return
        self._millis.update(int(seconds * 1000))
        self._clips.inc()
        self._frames.inc(result.num_frames)
        # The row records the range scored: its end where the video's frames end first.
        yield ClipExample(request=scored_request(request, result.range_end_sec),
                          num_frames=result.num_frames, rgb=result.rgb, flow=result.flow,
                          crops=self._crops)


# --- Results -----------------------------------------------------------------------------------


class ToScoreRecord(beam.DoFn):
    """PredictionResult -> a scores row; a clip whose forward failed -> ``errors``."""

    ERRORS = "errors"

    def __init__(self, labels: Sequence[str], top_k: int, embeddings: bool):
        self._labels = tuple(labels)
        self._top_k = top_k
        self._embeddings = embeddings

    def process(self, result):
        if isinstance(result.inference, InferenceFailure):
            yield beam.pvalue.TaggedOutput(self.ERRORS, inference_failure_record(
                result.inference, result.example.request))
            return
        yield score_record(result.example, result.inference, self._labels,
                           self._top_k, self._embeddings)


class CountRecords(beam.DoFn):
    """Counts the rows about to be written (Beam counters ``clips_scored`` and
    ``clips_failed``), stamps them with the run id and completes each to its schema."""

    def __init__(self, counter: str, schema, run_id: str):
        self._count = Metrics.counter(NAMESPACE, counter)
        self._schema = schema
        self._run_id = run_id

    def process(self, record):
        self._count.inc()
        yield complete_record({**record, "run_id": self._run_id}, self._schema)


class ScoreClips(beam.PTransform):
    """ClipExamples -> scores rows (main) and ``inference`` error rows.

    RunInference with the I3D handler, then fusion, softmax and top-k. A clip whose
    forward fails gets an error row (the handler isolates it from its batch-mates); a
    batch that fails outside the forwards lands in RunInference's dead letters, and each
    of its clips gets an error row.
    """

    def __init__(self, handler: I3DModelHandler, labels: Sequence[str], top_k: int,
                 embeddings: bool):
        super().__init__()
        self._handler = handler
        self._labels = tuple(labels)
        self._top_k = top_k
        self._embeddings = embeddings

    def expand(self, clips):
        from apache_beam.ml.inference.base import RunInference

        predictions, dead_letters = (
            clips | "I3D" >> RunInference(self._handler).with_exception_handling())
        records = predictions | "ScoreRecords" >> beam.ParDo(
            ToScoreRecord(self._labels, self._top_k, self._embeddings)
        ).with_outputs(ToScoreRecord.ERRORS, main="scores")
        scores = records.scores
        failed_batches = (dead_letters.failed_inferences
                          | "FailedBatches" >> beam.FlatMap(inference_errors))
        errors = (records.errors, failed_batches) | "InferenceErrors" >> beam.Flatten()
        return scores, errors


# --- The pipeline ------------------------------------------------------------------------------


def run_metadata(options: ScoreOptions, num_classes: int) -> dict[str, Any]:
    """What the output files record about the run (Parquet key-value metadata); its
    ``output_recipe`` is the recipe the output records (beam_i3d.job.output_record)."""
    from beam_i3d.job.output_record import METADATA_KEY, score_recipe
    from beam_i3d.media import recipe
    from model.labels import label_map_name

    checkpoints = {s: getattr(options, f"{s}_checkpoint") for s in options.streams}
    return {
        "version": __version__,
        "run_id": options.run_id,
        "streams": ",".join(options.streams),
        "checkpoints": checkpoints,
        "num_classes": num_classes,
        "label_map": label_map_name(num_classes),
        "top_k": options.top_k,
        "embeddings": options.embeddings,
        **({"window": {"window_sec": options.window.window,
                       "stride_sec": options.window.stride_sec,
                       "windows_per_item": options.window.windows_per_item,
                       **({"window_frames": options.window.window_frames,
                           "stride_frames": options.window.stride_in_frames,
                           "fps": options.window.fps} if options.window.in_frames else {})}}
           if options.window else {}),
        **({"preset": options.preset, "overridden": list(options.overridden)}
           if options.preset else {}),
        "allow_tf32": options.allow_tf32,
        # as asked; what each worker ran: the counters forwards_<backend>_<precision>
        "model_backend": options.model_backend,
        "precision": options.precision,
        "recipe": {
            "fps": (options.window.fps if options.window and options.window.in_frames
                    else recipe.SAMPLE_FPS),
            "resize_short_side": recipe.RESIZE_SHORT_SIDE,
            "crop": recipe.CROP_SIZE,
            "crops": options.crops,
            "max_seconds": options.max_seconds,
            "min_frames": recipe.MIN_FRAMES,
            "ignore_times": options.ignore_times,
            **({"flow": {
                "backend": options.flow_backend,
                "batch_pairs": options.flow_batch_pairs,
                "bound": recipe.FLOW_BOUND,
                "quantized": options.quantize_flow,
                "levels": recipe.FLOW_LEVELS if options.quantize_flow else None,
            }} if "flow" in options.streams else {}),
        },
        METADATA_KEY: score_recipe(options, num_classes),
    }


def build_pipeline(pipeline: beam.Pipeline, options: ScoreOptions, num_classes: int) -> None:
    """Add the scoring job to ``pipeline`` (see module doc)."""
    from model.labels import label_map

    metadata = run_metadata(options, num_classes)
    handler = I3DModelHandler(
        options.rgb_checkpoint if "rgb" in options.streams else None,
        options.flow_checkpoint if "flow" in options.streams else None,
        max_batch_size=options.batch_size,
        max_batch_frames=options.max_batch_frames,
        model_copies=options.model_copies,
        allow_tf32=options.allow_tf32,
        require_gpu=options.require_gpu,
        model_backend=options.model_backend,
        precision=options.precision)

    requests, manifest_errors, done = pipeline | "Manifests" >> ReadClipRequests(options)
    score_clips = ScoreClips(handler, label_map(num_classes), options.top_k,
                             options.embeddings)
    if options.window is not None:
        from beam_i3d.job.window_pipeline import ScoreWindows

        windows, timelines, plans, window_errors = requests | "Windows" >> ScoreWindows(
            options, score_clips, done)
        errors = (manifest_errors, window_errors) | "AllErrors" >> beam.Flatten()
        outputs = (("windows", windows, WINDOWS_SCHEMA, "windows_scored"),
                   ("timelines", timelines, TIMELINES_SCHEMA, "timelines_written"),
                   ("plans", plans, PLANS_SCHEMA, "rows_planned"),
                   ("errors", errors, ERRORS_SCHEMA, "clips_failed"))
    else:
        # No Reshuffle before decoding: the requests come out of routing's GroupByKey by
        # clip identity, which already spreads them over the workers (the decoding does
        # not fuse with the manifest's read); a second shuffle cost a fifth of the CPU
        # time of a run of 65,000 missing videos (benchmarks/README.md).
        decoded = requests | "Decode" >> beam.ParDo(DecodeClip(options)).with_outputs(
            DecodeClip.ERRORS, main="clips")
        scores, inference_errors = decoded.clips | "Score" >> score_clips
        errors = ((manifest_errors, decoded.errors, inference_errors)
                  | "AllErrors" >> beam.Flatten())
        outputs = (("scores", scores, SCORES_SCHEMA, "clips_scored"),
                   ("errors", errors, ERRORS_SCHEMA, "clips_failed"))

    for name, records, schema, counter in outputs:
        _ = (records
             | f"{name.title()}Records" >> beam.ParDo(
                 CountRecords(counter, schema, options.run_id))
             | f"Write{name.title()}" >> WriteShards(
                 bfileio.join(options.output, name), with_run_metadata(schema, metadata),
                 options.run_id, options.shard_rows, options.shard_seconds))
