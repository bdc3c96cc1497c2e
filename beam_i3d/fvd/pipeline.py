"""The ``beam-i3d fvd`` job: the statistics of one or two video sets, as a Beam pipeline.

For each side (``real``, ``fake``) given as a manifest::

    read manifests -> parse rows -> drop repeats -> Reshuffle
      [-> count frames -> the first ``max_clips`` eligible rows (``styleganv``)]
      -> read + preprocess (the protocol's frames) -> RunInference(I3DModelHandler)
      -> the features (time-averaged logits) -> CombineGlobally(MomentsCombineFn)
      -> DIR/stats/<side>.npz
    each clip counted ------------------------------> DIR/clips/*.parquet
    every failure on the way, and each row -------> DIR/errors/*.parquet
      not selected (error_type NotSelected)

Counting frames and reading clips (the resize included) run in the decode pool's child
processes (:class:`beam_i3d.job.pooled.PoolDoFn`), as ``score``'s decoding does, so that
an input that crashes or hangs its decoder costs that row, never the worker.

The selection (``max_clips``, StyleGAN-V's 2048): every row's frames are counted
(:func:`beam_i3d.fvd.clips.count_frames`: array headers and directory listings are not
decoded; videos are), the rows with at least the protocol's frames are eligible, and the
``max_clips`` eligible rows first in manifest order (manifest file, then row) are taken:
``Top.Smallest`` over their ``(manifest, row)`` positions, a side input of at most
``max_clips`` small tuples. Only those are read and scored.

Features never meet in one place: each worker folds its clips into a
:class:`beam_i3d.fvd.Moments` (count, mean, centred sum of outer products, float64) and
Beam merges the partial states pairwise (:func:`beam_i3d.fvd.merge`), so memory per
worker is ``O(D^2)`` whatever the number of clips and the result does not depend on the
bundling. The per-clip outcome rows (``clips``, ``errors``; both carry ``side`` and
``row_key``) let the launcher check that every manifest row is either counted in the
statistics or an error (:func:`reconcile`). The numeric work is in
:mod:`beam_i3d.fvd.distance`, :mod:`beam_i3d.fvd.clips` and :mod:`beam_i3d.fvd.stats_files`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_i3d import fileio as bfileio
from beam_i3d.fvd.distance import Moments, add, merge_all
from beam_i3d.errors import VideoError
from beam_i3d.job.inference import ClipExample, I3DModelHandler, InferenceFailure
from beam_i3d.job.pooled import PoolDoFn
from beam_i3d.job.progress import NAMESPACE
from beam_i3d.job.records import (complete_record, inference_errors, inference_failure_record,
                                   request_error)
from schemas import ERRORS_SCHEMA

_LOG = logging.getLogger(__name__)

SIDES = ("real", "fake")
CLIPS_SCHEMA = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("row_key", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_uri", pa.string(), nullable=False),
    pa.field("frames", pa.int32(), nullable=False),
    pa.field("start_frame", pa.int32()),  # the first frame taken (0 unless a random start)
    pa.field("run_id", pa.string(), nullable=False),
])
NOT_SELECTED = "NotSelected"  # error_type of a row beyond the protocol's max_clips
FVD_ERRORS_SCHEMA = pa.schema(
    [pa.field("side", pa.string(), nullable=False)] + list(ERRORS_SCHEMA))


@dataclasses.dataclass(frozen=True)
class FvdOptions:
    output: str
    manifests: dict  # side -> manifest glob, for the sides computed by the job
    protocol: str = "original"
    frames: int = 16
    identity: dict = dataclasses.field(default_factory=dict)  # stats identity fields
    specs: dict = dataclasses.field(default_factory=dict)  # side -> clips.ClipSpec
    max_clips: int | None = None  # take the first max_clips eligible rows (styleganv)
    checkpoint: str = "default"  # RGB weights spec, as score's --rgb-checkpoint
    feature: str = "rgb_logits"  # the model output taken as the feature vector
    clip_starts: dict = dataclasses.field(default_factory=dict)  # side -> description
    video_template: str | None = None
    recipe: dict = dataclasses.field(default_factory=dict)  # the output's recorded recipe
    batch_size: int = 8
    max_batch_frames: int = 2000
    model_copies: int | None = None
    allow_tf32: bool = False
    require_gpu: bool = False
    model_backend: str = "auto"  # auto | tf | openvino: beam_i3d.job.backends
    precision: str = "f32"       # f32 | bf16 (openvino only; needs --nonstandard)
    limits: Any = None  # DecodeLimits (None: the defaults)
    decode_processes: int | None = None  # decode children per worker (None: one per CPU)
    shard_rows: int = 500
    shard_seconds: float = 120.0
    run_id: str = ""

    @property
    def manifest_options(self):
        from beam_i3d.job.manifest import ManifestOptions

        # The protocol takes the first frames of each file: manifest times are ignored.
        return ManifestOptions(self.video_template, ignore_times=True)

    def score_options(self, side: str):
        """What :class:`beam_i3d.job.routing.ReadClipRequests` needs for one side."""
        from beam_i3d.job.score_options import ScoreOptions

        return ScoreOptions(manifest=self.manifests[side], output=self.output,
                            video_template=self.video_template, ignore_times=True)

    def spec(self, side: str):
        from beam_i3d.fvd.clips import ClipSpec

        return self.specs.get(side) or ClipSpec(frames=self.frames)


class MomentsCombineFn(beam.CombineFn):
    """Feature vectors -> their :class:`~beam_i3d.fvd.Moments` (float64), merged exactly
    (Chan et al.) across bundles and workers."""

    def create_accumulator(self):
        return Moments()

    def add_input(self, accumulator, element):
        return add(accumulator, element)

    def merge_accumulators(self, accumulators):
        return merge_all(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class _FvdSideDoFn(PoolDoFn):
    """What the DoFns reading one side's clips share: the side, its protocol spec, the
    decode pool (``options.limits``, ``options.decode_processes``: every input is read in
    its children, as ``score`` decodes), and the side's read-error counter."""

    def __init__(self, side: str, spec, options):
        super().__init__(options)
        self._side = side
        self._spec = spec
        self._failed = Metrics.counter(NAMESPACE, f"fvd_{side}_read_errors")

    def error(self, request, error):
        self._failed.inc()
        if not isinstance(error, VideoError):
            _LOG.warning("unexpected error reading %s: %s: %s", request.video_uri,
                         type(error).__name__, error)
        return beam.pvalue.TaggedOutput(self.ERRORS, request_error("decode", error, request))


class CountFvdFrames(_FvdSideDoFn):
    """ClipRequest -> ``(request, frame count)`` of the clips with at least the protocol's
    frames; the others (and unreadable ones) -> errors."""

    def process(self, request, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        from beam_i3d.fvd.clips import count_frames

        # A first-frames side only needs to know that there are enough frames.
        at_most = self._spec.needed if self._spec.start == "first" else None
        yield from self.submit(request, timestamp, window, lambda key: self._pool.submit_call(
            key, request.video_uri, count_frames, at_most))

    def outputs(self, request, total, seconds):
        from beam_i3d.errors import TooFewFrames

        spec = self._spec
        if not isinstance(total, BaseException) and total < spec.needed:
            total = TooFewFrames(request.video_uri, f"has {total} frames; the protocol "
                                 f"takes {spec.needed} ({spec.frames} every {spec.subsample})")
        if isinstance(total, BaseException):
            yield self.error(request, total)
            return
        yield request, total


class ChooseFirst(beam.DoFn):
    """``(request, count)`` -> the same if its manifest position is among the chosen
    (side input: the ``max_clips`` smallest positions), else a NotSelected row."""

    NOT_CHOSEN = "not_chosen"

    def __init__(self, max_clips: int):
        self._max_clips = max_clips
        self._chosen = None
        self._chosen_from = None

    def process(self, element, chosen):
        request, _ = element
        if self._chosen_from is not chosen:
            self._chosen, self._chosen_from = set(chosen), chosen
        if tuple(request.order) in self._chosen:
            yield element
            return
        yield beam.pvalue.TaggedOutput(self.NOT_CHOSEN, {
            "clip_id": request.clip_id, "video_uri": request.video_uri, "stage": "select",
            "error_type": NOT_SELECTED,
            "message": (f"{request.video_uri}: not among the first {self._max_clips:,} "
                        "eligible clips in manifest order (the protocol takes those)"),
            "source": request.source, "row_key": request.row_key})


def _position(element):
    return tuple(element[0].order)


class ReadFvdClip(_FvdSideDoFn):
    """ClipRequest, or ``(request, frame count)`` -> ClipExample (the protocol's float32
    frames, read and resized in a decode child); failures -> errors."""

    def __init__(self, side: str, spec, options):
        super().__init__(side, spec, options)
        self._read = Metrics.counter(NAMESPACE, f"fvd_{side}_clips_read")

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        from beam_i3d.fvd.clips import read_protocol_clip

        request, total = element if isinstance(element, tuple) else (element, None)
        yield from self.submit(request, timestamp, window, lambda key: self._pool.submit_call(
            key, request.video_uri, read_protocol_clip, self._spec, total, request.row_key,
            arrays=("rgb",)))

    def outputs(self, request, clip, seconds):
        if isinstance(clip, BaseException):
            yield self.error(request, clip)
            return
        self._read.inc()
        yield FvdClipExample(request=request, num_frames=int(clip.rgb.shape[0]), rgb=clip.rgb,
                             start_frame=clip.start_frame)


@dataclasses.dataclass
class FvdClipExample(ClipExample):
    start_frame: int = 0


class ToFeature(beam.DoFn):
    """PredictionResult -> the clip's feature vector (main) and its outcome row
    (``clips``); a failed forward -> ``errors``."""

    CLIPS = "clips"
    ERRORS = "errors"

    def __init__(self, feature: str = "rgb_logits"):
        self._feature = feature

    def process(self, result):

        request = result.example.request
        if isinstance(result.inference, InferenceFailure):
            yield beam.pvalue.TaggedOutput(self.ERRORS, inference_failure_record(
                result.inference, request))
            return
        yield np.asarray(result.inference[self._feature], np.float64)
        yield beam.pvalue.TaggedOutput(self.CLIPS, {
            "row_key": request.row_key, "clip_id": request.clip_id,
            "video_uri": request.video_uri, "frames": int(result.example.num_frames),
            "start_frame": int(getattr(result.example, "start_frame", 0))})


class StampRecords(beam.DoFn):
    def __init__(self, side: str, schema, run_id: str):
        self._side = side
        self._schema = schema
        self._run_id = run_id

    def process(self, record):

        yield complete_record({**record, "side": self._side, "run_id": self._run_id},
                              self._schema)


def write_side_stats(moments: Moments, path: str, identity: dict,
                     clip_start: str = "first") -> str:
    from beam_i3d.fvd.stats_files import FeatureSetStats, save_npz

    save_npz(FeatureSetStats(moments, source=path, clip_start=clip_start, **identity), path)
    return path


def stats_path(output: str, side: str) -> str:
    return bfileio.join(output, "stats", f"{side}.npz")


def build_side(pipeline, options: FvdOptions, side: str, handler: I3DModelHandler):
    """Add one side's branch; returns its (clip outcome rows, error rows)."""
    from apache_beam.ml.inference.base import RunInference

    from beam_i3d.job.routing import ReadClipRequests

    spec = options.spec(side)
    requests, manifest_errors, _ = (
        pipeline | f"{side}/Manifests" >> ReadClipRequests(options.score_options(side)))
    shuffled = requests | f"{side}/Reshuffle" >> beam.Reshuffle()
    side_errors = [manifest_errors]
    if options.max_clips is not None:
        counted = shuffled | f"{side}/CountFrames" >> beam.ParDo(CountFvdFrames(
            side, spec, options)).with_outputs(CountFvdFrames.ERRORS, main="eligible")
        chosen = (counted.eligible
                  | f"{side}/Positions" >> beam.Map(_position)
                  | f"{side}/FirstEligible" >> beam.combiners.Top.Smallest(options.max_clips))
        selected = counted.eligible | f"{side}/Choose" >> beam.ParDo(
            ChooseFirst(options.max_clips), beam.pvalue.AsSingleton(chosen)).with_outputs(
                ChooseFirst.NOT_CHOSEN, main="chosen")
        to_read = selected.chosen
        side_errors += [counted.errors, selected.not_chosen]
    else:
        to_read = shuffled
    read = (to_read
            | f"{side}/Read" >> beam.ParDo(ReadFvdClip(side, spec, options)
                                          ).with_outputs(ReadFvdClip.ERRORS, main="clips"))
    predictions, dead = (read.clips
                         | f"{side}/I3D" >> RunInference(handler).with_exception_handling())
    features = predictions | f"{side}/Features" >> beam.ParDo(
        ToFeature(options.feature)).with_outputs(ToFeature.CLIPS, ToFeature.ERRORS,
                                                 main="features")
    _ = (features.features
         | f"{side}/Moments" >> beam.CombineGlobally(MomentsCombineFn())
         | f"{side}/WriteStats" >> beam.Map(write_side_stats, stats_path(options.output, side),
                                            options.identity,
                                            options.clip_starts.get(side, "first")))
    failed = dead.failed_inferences | f"{side}/FailedBatches" >> beam.FlatMap(inference_errors)
    errors = ((*side_errors, read.errors, features.errors, failed)
              | f"{side}/Errors" >> beam.Flatten()
              | f"{side}/StampErrors" >> beam.ParDo(
                  StampRecords(side, FVD_ERRORS_SCHEMA, options.run_id)))
    clips = features.clips | f"{side}/StampClips" >> beam.ParDo(
        StampRecords(side, CLIPS_SCHEMA, options.run_id))
    return clips, errors


def build_pipeline(pipeline, options: FvdOptions) -> None:
    from beam_i3d.job.shards import WriteShards

    handler = I3DModelHandler(
        options.checkpoint, None, max_batch_size=options.batch_size,
        max_batch_frames=options.max_batch_frames, model_copies=options.model_copies,
        allow_tf32=options.allow_tf32, require_gpu=options.require_gpu,
        model_backend=options.model_backend, precision=options.precision)
    outcomes = {"clips": [], "errors": []}
    for side in SIDES:
        if side in options.manifests:
            clips, errors = build_side(pipeline, options, side, handler)
            outcomes["clips"].append(clips)
            outcomes["errors"].append(errors)
    from beam_i3d.job.output_record import METADATA_KEY
    from schemas import with_run_metadata

    metadata = {"run_id": options.run_id, METADATA_KEY: options.recipe}
    for name, schema in (("clips", CLIPS_SCHEMA), ("errors", FVD_ERRORS_SCHEMA)):
        _ = (outcomes[name]
             | f"All{name.title()}" >> beam.Flatten()
             | f"Write{name.title()}" >> WriteShards(
                 bfileio.join(options.output, name), with_run_metadata(schema, metadata),
                 options.run_id,
                 options.shard_rows, options.shard_seconds))


# --- After the run: reconciliation -----------------------------------------------------------


@dataclasses.dataclass
class SideCounts:
    side: str
    manifest_rows: int
    counted: int
    failed: int
    missing: list  # ExpectedRow
    error_types: dict
    not_selected: int = 0  # eligible rows beyond the protocol's max_clips (not failures)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def tried(self) -> int:
        """Rows counted or failed: the not selected ones were never tried."""
        return self.manifest_rows - self.not_selected

    @property
    def failure_rate(self) -> float:
        return self.failed / self.tried if self.tried else 0.0


def read_outcomes(output: str, kind: str, run_id: str) -> list[dict]:
    from beam_i3d.job.results import list_shards, read_columns

    columns = ("side", "row_key", "error_type") if kind == "errors" else ("side", "row_key")
    rows = []
    for path in list_shards(bfileio.join(output, kind)):
        table = read_columns(path, ("run_id",) + columns)
        for record in table.to_pylist():
            if record["run_id"] == run_id:
                rows.append(record)
    return rows


def reconcile(options: FvdOptions) -> dict[str, SideCounts]:
    """Per side: every manifest row must be counted or an error (a row a runner wrote
    twice counts once; a counted row supersedes an error of the same key)."""
    from beam_i3d.job.verify import expected_rows

    clips = read_outcomes(options.output, "clips", options.run_id)
    errors = read_outcomes(options.output, "errors", options.run_id)
    out = {}
    for side, manifest in options.manifests.items():
        expected = expected_rows(manifest, options.manifest_options)
        counted = {r["row_key"] for r in clips if r["side"] == side}
        settled = {r["row_key"]: r["error_type"] for r in errors
                   if r["side"] == side and r["row_key"] not in counted}
        missing = [e for e in expected if e.row_key not in counted and e.row_key not in settled]
        failed = {k: t for k, t in settled.items() if t != NOT_SELECTED}
        types: dict[str, int] = {}
        for t in failed.values():
            types[t] = types.get(t, 0) + 1
        out[side] = SideCounts(side, len(expected), len(counted), len(failed), missing, types,
                               not_selected=len(settled) - len(failed))
    return out
