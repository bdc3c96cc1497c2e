"""What a ``score`` run computes: :class:`ScoreOptions`, made from the command line
(:mod:`beam_i3d.cli.score`) or by ``fvd``, read by the pipeline
(:mod:`beam_i3d.job.pipeline`) and the manifest routing (:mod:`beam_i3d.job.routing`)."""

from __future__ import annotations

import dataclasses

from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.windows import WindowOptions
from beam_i3d.media.recipe import DecodeLimits


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """What to compute, independent of where the pipeline runs."""

    manifest: str
    output: str
    streams: tuple[str, ...] = ("rgb",)
    rgb_checkpoint: str | None = "default"
    flow_checkpoint: str | None = None
    top_k: int = 5
    max_seconds: float = 10.0
    batch_size: int = 8
    max_batch_frames: int = 2000
    model_copies: int | None = None
    allow_tf32: bool = False
    require_gpu: bool = False  # fail the job where the model loads if TF sees no GPU
    model_backend: str = "auto"  # auto | tf | openvino: beam_i3d.job.backends
    precision: str = "f32"       # f32 | bf16 (openvino only)
    embeddings: bool = True
    video_template: str | None = None
    ignore_times: bool = False
    skip_existing: bool = False
    retry_errors: bool = False   # with skip_existing: transient errors are tried again
    overwrite: bool = False      # replace what the output holds (removed before the run)
    shard_rows: int = 500        # rows buffered per output shard before it is written
    shard_seconds: float = 120.0  # ... or seconds since its first row
    quantize_flow: bool = True
    flow_backend: str = "tf"
    flow_batch_pairs: int | None = None
    limits: DecodeLimits = DecodeLimits()
    decode_processes: int | None = None  # decoding child processes per worker (None: CPUs)
    window: WindowOptions | None = None  # windowed run (score --window): beam_i3d.job.windows
    # ((stream, identity), ...) of the weights (model.weights.weights_identity), read at
    # launch: part of the output's recorded recipe (beam_i3d.job.output_record)
    weights: tuple[tuple[str, str], ...] = ()
    run_id: str = ""
    # score --preset NAME (beam_i3d.job.presets) and the options given beside it that
    # override its values: recorded in the run's metadata
    preset: str | None = None
    overridden: tuple[str, ...] = ()
    crops: str = "center"  # score --crops center|five|ten: beam_i3d.media.crops

    @property
    def manifest_options(self) -> ManifestOptions:
        return ManifestOptions(self.video_template, self.ignore_times)
