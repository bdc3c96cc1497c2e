"""The ``beam-i3d fvd`` job: the statistics of one or two video sets, as a Beam pipeline.

For each side (``real``, ``fake``) given as a manifest::

    read manifests -> parse rows -> drop repeats -> Reshuffle
      -> read + preprocess (the protocol's frames) -> RunInference(I3DModelHandler)
      -> the 400-d time-averaged logits -> CombineGlobally(MomentsCombineFn)
      -> DIR/stats/<side>.npz
    each clip counted ------------------------------> DIR/clips/*.parquet
    every failure on the way -----------------------> DIR/errors/*.parquet

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
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_i3d import fileio as bfileio
from beam_i3d.fvd.distance import Moments, add, merge_all
from beam_i3d.job.inference import ClipExample, I3DModelHandler, InferenceFailure
from beam_i3d.job.progress import NAMESPACE
from schemas import ERRORS_SCHEMA

SIDES = ("real", "fake")
CLIPS_SCHEMA = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("row_key", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_uri", pa.string(), nullable=False),
    pa.field("frames", pa.int32(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
])
FVD_ERRORS_SCHEMA = pa.schema(
    [pa.field("side", pa.string(), nullable=False)] + list(ERRORS_SCHEMA))


@dataclasses.dataclass(frozen=True)
class FvdOptions:
    output: str
    manifests: dict  # side -> manifest glob, for the sides computed by the job
    protocol: str = "original"
    frames: int = 16
    identity: dict = dataclasses.field(default_factory=dict)  # stats identity fields
    video_template: str | None = None
    batch_size: int = 8
    max_batch_frames: int = 2000
    model_copies: int | None = None
    allow_tf32: bool = False
    require_gpu: bool = False
    limits: Any = None
    shard_rows: int = 500
    shard_seconds: float = 120.0
    run_id: str = ""

    @property
    def manifest_options(self):
        from beam_i3d.job.manifest import ManifestOptions

        # The protocol takes the first frames of each file: manifest times are ignored.
        return ManifestOptions(self.video_template, ignore_times=True)

    def score_options(self, side: str):
        """What :class:`beam_i3d.job.pipeline.ReadClipRequests` needs for one side."""
        from beam_i3d.job.pipeline import ScoreOptions

        return ScoreOptions(manifest=self.manifests[side], output=self.output,
                            video_template=self.video_template, ignore_times=True)


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


class ReadFvdClip(beam.DoFn):
    """ClipRequest -> ClipExample (the protocol's float32 frames); failures -> errors."""

    ERRORS = "errors"

    def __init__(self, side: str, protocol: str, frames: int, limits):
        self._side = side
        self._protocol = protocol
        self._frames = frames
        self._limits = limits
        self._read = Metrics.counter(NAMESPACE, f"fvd_{side}_clips_read")
        self._failed = Metrics.counter(NAMESPACE, f"fvd_{side}_read_errors")

    def process(self, request):
        from beam_i3d.fvd.clips import read_clip
        from beam_i3d.job.pipeline import request_error

        try:
            rgb = read_clip(request.video_uri, self._protocol, self._frames, self._limits)
        except Exception as e:  # noqa: BLE001: one clip's error row, the job goes on
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(self.ERRORS, request_error("decode", e, request))
            return
        self._read.inc()
        yield ClipExample(request=request, num_frames=int(rgb.shape[0]), rgb=rgb)


class ToFeature(beam.DoFn):
    """PredictionResult -> the clip's feature vector (main) and its outcome row
    (``clips``); a failed forward -> ``errors``."""

    CLIPS = "clips"
    ERRORS = "errors"

    def __init__(self, feature: str = "rgb_logits"):
        self._feature = feature

    def process(self, result):
        from beam_i3d.job.pipeline import inference_failure_record

        request = result.example.request
        if isinstance(result.inference, InferenceFailure):
            yield beam.pvalue.TaggedOutput(self.ERRORS, inference_failure_record(
                result.inference, request))
            return
        yield np.asarray(result.inference[self._feature], np.float64)
        yield beam.pvalue.TaggedOutput(self.CLIPS, {
            "row_key": request.row_key, "clip_id": request.clip_id,
            "video_uri": request.video_uri, "frames": int(result.example.num_frames)})


class StampRecords(beam.DoFn):
    def __init__(self, side: str, schema, run_id: str):
        self._side = side
        self._schema = schema
        self._run_id = run_id

    def process(self, record):
        from beam_i3d.job.pipeline import complete_record

        yield complete_record({**record, "side": self._side, "run_id": self._run_id},
                              self._schema)


def write_side_stats(moments: Moments, path: str, identity: dict) -> str:
    from beam_i3d.fvd.stats_files import FeatureSetStats, save_npz

    save_npz(FeatureSetStats(moments, source=path, **identity), path)
    return path


def stats_path(output: str, side: str) -> str:
    return bfileio.join(output, "stats", f"{side}.npz")


def build_side(pipeline, options: FvdOptions, side: str, handler: I3DModelHandler):
    """Add one side's branch; returns its (clip outcome rows, error rows)."""
    from apache_beam.ml.inference.base import RunInference

    from beam_i3d.job.pipeline import ReadClipRequests, inference_errors

    requests, manifest_errors, _ = (
        pipeline | f"{side}/Manifests" >> ReadClipRequests(options.score_options(side)))
    read = (requests
            | f"{side}/Reshuffle" >> beam.Reshuffle()
            | f"{side}/Read" >> beam.ParDo(ReadFvdClip(
                side, options.protocol, options.frames, options.limits)).with_outputs(
                    ReadFvdClip.ERRORS, main="clips"))
    predictions, dead = (read.clips
                         | f"{side}/I3D" >> RunInference(handler).with_exception_handling())
    features = predictions | f"{side}/Features" >> beam.ParDo(ToFeature()).with_outputs(
        ToFeature.CLIPS, ToFeature.ERRORS, main="features")
    _ = (features.features
         | f"{side}/Moments" >> beam.CombineGlobally(MomentsCombineFn())
         | f"{side}/WriteStats" >> beam.Map(write_side_stats, stats_path(options.output, side),
                                            options.identity))
    failed = dead.failed_inferences | f"{side}/FailedBatches" >> beam.FlatMap(inference_errors)
    errors = ((manifest_errors, read.errors, features.errors, failed)
              | f"{side}/Errors" >> beam.Flatten()
              | f"{side}/StampErrors" >> beam.ParDo(
                  StampRecords(side, FVD_ERRORS_SCHEMA, options.run_id)))
    clips = features.clips | f"{side}/StampClips" >> beam.ParDo(
        StampRecords(side, CLIPS_SCHEMA, options.run_id))
    return clips, errors


def build_pipeline(pipeline, options: FvdOptions) -> None:
    from beam_i3d.job.shards import WriteShards

    handler = I3DModelHandler(
        "default", None, max_batch_size=options.batch_size,
        max_batch_frames=options.max_batch_frames, model_copies=options.model_copies,
        allow_tf32=options.allow_tf32, require_gpu=options.require_gpu)
    outcomes = {"clips": [], "errors": []}
    for side in SIDES:
        if side in options.manifests:
            clips, errors = build_side(pipeline, options, side, handler)
            outcomes["clips"].append(clips)
            outcomes["errors"].append(errors)
    for name, schema in (("clips", CLIPS_SCHEMA), ("errors", FVD_ERRORS_SCHEMA)):
        _ = (outcomes[name]
             | f"All{name.title()}" >> beam.Flatten()
             | f"Write{name.title()}" >> WriteShards(
                 bfileio.join(options.output, name), schema, options.run_id,
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

    @property
    def ok(self) -> bool:
        return not self.missing


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
        failed = {r["row_key"]: r["error_type"] for r in errors
                  if r["side"] == side and r["row_key"] not in counted}
        missing = [e for e in expected if e.row_key not in counted and e.row_key not in failed]
        types: dict[str, int] = {}
        for t in failed.values():
            types[t] = types.get(t, 0) + 1
        out[side] = SideCounts(side, len(expected), len(counted), len(failed), missing, types)
    return out
