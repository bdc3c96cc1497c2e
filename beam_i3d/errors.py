"""The one error hierarchy of beam-i3d.

Every error the project raises on purpose derives from :class:`BeamI3DError`. Each
subclass names a cause; the message names the thing (clip URI, checkpoint path) and
says what was wrong with it. The pipeline turns these into rows of the errors output,
using the class name as ``error_type``.

    BeamI3DError
    ├── ConfigurationError         the run cannot start as asked (exit status 3)
    │   ├── OutputError            the output location is unusable or already holds a run
    │   ├── StorageUnreachable     storage the manifest points at cannot be read
    │   ├── GPUUnavailable         --require-gpu, and TensorFlow sees no GPU on a worker
    │   └── BackendUnavailable     --model-backend / --precision cannot run here (not
    │                              installed; bf16 on a CPU without bf16)
    ├── ModelError                 the network or its weights (model/errors.py)
    │   ├── CheckpointNotFound     no checkpoint at the given spec
    │   ├── CheckpointMismatch     names/shapes do not fit the network
    │   ├── WeightsDownloadError   the bundled default weights could not be fetched
    │   ├── WeightsIntegrityError  fetched bytes have the wrong hash or content
    │   └── InvalidModelInput      wrong shape/dtype/length given to the network
    │       └── InvalidFlowInput   wrong shape/dtype of frames given to optical flow
    ├── VideoError                 one clip could not be turned into frames
    │   ├── VideoNotFound
    │   ├── NotAVideo
    │   ├── NoVideoStream
    │   ├── UnsupportedCodec
    │   ├── CorruptVideo
    │   ├── VideoTooLarge
    │   ├── VideoTooLong
    │   ├── DecodeTimeout          (transient)
    │   ├── DecoderCrashed         (transient) the decoding child process died
    │   ├── DecodeOutOfMemory      (transient) the decoding child ran out of memory
    │   ├── DecodeResourceExhausted (transient) the system refused FFmpeg a resource (EAGAIN)
    │   ├── StorageError           (transient) auth/network failure reading the video
    │   ├── UnsupportedShape       extreme aspect ratio (flow cost unbounded)
    │   ├── UnsupportedURI         a URI scheme beam-i3d cannot read
    │   └── EmptyClip
    ├── ManifestError              a manifest row that cannot be scored
    │   └── DuplicateClip
    ├── ReconciliationError        outputs do not account for every manifest row (exit 4)
    └── ReportError                a run's outputs cannot be reported on

BeamI3DError and the ModelError branch are defined in :mod:`model.errors`, so that the
network's package imports nothing of beam_i3d; this module takes them back under their
names, and they are caught and reported like every other class here.

``transient`` (a class attribute) says whether the same clip may succeed when tried
again (time-outs, crashes, I/O, out of memory or other resources): ``score --skip-existing --retry-errors``
scores those again and leaves the deterministic ones (not a video, bad rows) settled.
"""

from __future__ import annotations

from model import errors as _model

# Defined in model/errors.py, which imports nothing of beam_i3d; this hierarchy's all the same.
BeamI3DError = _model.BeamI3DError
ModelError = _model.ModelError
CheckpointNotFound = _model.CheckpointNotFound
CheckpointMismatch = _model.CheckpointMismatch
WeightsDownloadError = _model.WeightsDownloadError
WeightsIntegrityError = _model.WeightsIntegrityError
InvalidModelInput = _model.InvalidModelInput


# --- The run as a whole --------------------------------------------------------------


class ConfigurationError(BeamI3DError):
    """The run cannot start as asked: options, outputs, manifests or storage."""


class OutputError(ConfigurationError):
    """The output location is unusable (empty, root, a file, unwritable) or already
    holds the results of a run (use --skip-existing or --overwrite)."""


class RecipeMismatch(OutputError):
    """The output was written by another command, or under another recipe than this
    run's (an output is one experiment: see :mod:`beam_i3d.job.output_record`)."""


class StorageUnreachable(ConfigurationError):
    """Storage that the manifest's videos live on cannot be read with the credentials
    at hand (checked at launch, before any work)."""


class GPUUnavailable(ConfigurationError):
    """``--require-gpu`` was given and TensorFlow sees no GPU where the model loads
    (no driver, CUDA libraries that do not fit it, or a CPU-only TensorFlow). It fails
    the job instead of letting it score on the CPU, many times slower."""


class BackendUnavailable(ConfigurationError):
    """The model backend or precision asked for cannot run here: OpenVINO is not
    installed, or ``--precision bf16`` on a CPU without bfloat16 instructions. Raised
    at launch where that can be known there, else where the model loads (failing the
    job, as GPUUnavailable does); never a silent fall-back to another backend."""


class ReconciliationError(BeamI3DError):
    """The outputs do not account for every manifest row exactly once."""


class InvalidFlowInput(InvalidModelInput):
    """Frames given to an optical-flow backend have the wrong type, dtype or shape."""


# --- Video decoding ------------------------------------------------------------------


class VideoError(BeamI3DError):
    """One clip could not be decoded into frames. The message names the URI."""

    def __init__(self, uri: str, cause: str):
        self.uri = uri
        self.cause = cause
        super().__init__(f"{uri}: {cause}")

    def __reduce__(self):
        # Exception's own pickling passes the message alone, which this constructor does
        # not take: pickle with (uri, cause) and the attributes (error_type included), so
        # the error crosses processes whole (Beam between workers, multiprocessing).
        return type(self), (self.uri, self.cause), self.__dict__


class VideoNotFound(VideoError):
    """No file at the URI."""


class NotAVideo(VideoError):
    """The bytes are not a container FFmpeg can open (text, image, zero bytes...)."""


class NoVideoStream(VideoError):
    """The container holds no video stream (audio only, subtitles...)."""


class UnsupportedCodec(VideoError):
    """The video stream's codec has no decoder in this build of FFmpeg."""


class CorruptVideo(VideoError):
    """The container opened but decoding failed (truncated file, broken packets)."""


class VideoTooLarge(VideoError):
    """The frame size is over the configured pixel limit."""


class VideoTooLong(VideoError):
    """The stream is longer than the configured duration limit."""


class DecodeTimeout(VideoError):
    """Decoding the clip took longer than its time budget."""

    transient = True


class DecoderCrashed(VideoError):
    """The child process decoding the clip died (a signal such as SIGSEGV or SIGABRT)."""

    transient = True


class DecodeOutOfMemory(VideoError):
    """The child process decoding the clip went over its memory limit."""

    transient = True


class DecodeResourceExhausted(VideoError):
    """FFmpeg was refused a resource of the system (``EAGAIN``: most often a decoder
    thread that could not be started on a loaded machine), not a fault of the file."""

    transient = True


class StorageError(VideoError):
    """Reading the video failed for a reason outside the file: credentials, network,
    an unreachable or throttling storage service."""

    transient = True


class UnsupportedShape(VideoError):
    """The frames' displayed aspect ratio is over the configured limit."""


class UnsupportedURI(VideoError):
    """The URI's scheme is not one beam-i3d reads (local paths, file://, gs://...)."""


class EmptyClip(VideoError):
    """The requested time range holds no frames (empty, inverted or past the end)."""


class TooFewFrames(VideoError):
    """The clip has fewer frames than the FVD protocol takes (``beam-i3d fvd``)."""


class UnsupportedFrames(VideoError):
    """An array or frame directory that is not uint8 ``[T, H, W, 3]`` RGB of one size."""

class UnknownDuration(VideoError):
    """The container declares no duration, so a windowed run cannot plan its windows."""


class UnknownFrameRate(VideoError):
    """``--fps native``: the video's frames carry no presentation times and its stream
    declares no frame rate, so its own frames cannot be placed in time."""


# --- Manifests -----------------------------------------------------------------------


class ManifestError(BeamI3DError):
    """A manifest row that cannot become a clip to score (no URI, bad times...)."""


class DuplicateClip(ManifestError):
    """A clip_id seen before in the manifests; only its first occurrence is scored."""


# --- Reports -------------------------------------------------------------------------


class ReportError(BeamI3DError):
    """``beam-i3d report`` cannot read a run's outputs (no scores/ or errors/, bad files)."""


def error_classes() -> dict[str, type[BeamI3DError]]:
    """Every class of the hierarchy by name (the ``error_type`` of error rows)."""
    found: dict[str, type[BeamI3DError]] = {}
    pending = [BeamI3DError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def is_transient(error_type: str, stage: str) -> bool:
    """Whether an error row (its ``error_type`` and ``stage``) may succeed on a retry.

    Bad manifest rows and our deterministic clip errors (NotAVideo, CorruptVideo...)
    are not; time-outs, crashes, storage and memory failures are; so is anything not
    of our hierarchy (an unexpected exception, a TensorFlow error at inference), since
    nothing says it would fail again.
    """
    if stage == "manifest":
        return False
    cls = error_classes().get(error_type)
    return True if cls is None else cls.transient
