"""Opening a video: reading its bytes (local or through Beam's FileSystems), the
container formats accepted, the header checks against the decode limits, and
probing (what the container says, its declared duration, where its frames really end)
without decoding a frame.

Reading. ``uri`` is a local path, a ``file:`` URI (``file:///a/b``, ``file:/a/b``), or a
URI of a scheme Beam's FileSystems have registered (``gs://``, ``s3://``...); any other
scheme (``http://``, ``ftp://``...) is UnsupportedURI. Its bytes are streamed into PyAV
as a Python file object, without a temporary copy: local files through ``open()`` (no
Beam import, no FFmpeg protocol parsing of the path, so a name like ``concat:a|b`` is
just a file name), other URIs through ``FileSystems.open``, each call of which (the
existence check, the open, every read) runs in a helper thread that the clip waits on
only until its time budget is spent: the storage clients' own retries (minutes) cannot
be bounded through FileSystems. A 404 is VideoNotFound; credentials, permission (403),
throttling (429), service (5xx) and network failures, and no answer within the budget,
are StorageError (transient). Only the container formats in :data:`ACCEPTED_FORMATS`
are opened, so a playlist (HLS, concat, ...) cannot make FFmpeg read other files or
URLs; other files are NotAVideo with what they are ("an image (png), not a video").
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import queue
import threading
import time
from fractions import Fraction

from beam_i3d import fileio
from beam_i3d.errors import (
    CorruptVideo,
    DecodeOutOfMemory,
    DecodeResourceExhausted,
    DecodeTimeout,
    NotAVideo,
    NoVideoStream,
    StorageError,
    UnsupportedCodec,
    UnsupportedURI,
    VideoError,
    VideoNotFound,
    VideoTooLarge,
    VideoTooLong,
)
from beam_i3d.media.recipe import DecodeLimits
from beam_i3d.media.video_pixels import check_aspect_ratio

# FFmpeg demuxers that may open a clip (names as in ``ffmpeg -demuxers``). Everything
# else, in particular playlists and "meta" formats that open further files or URLs
# (hls, dash, concat, image2, tty...), and single images, is refused as NotAVideo.
ACCEPTED_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "asf", "ogg",
    "gif", "h264", "hevc", "m4v", "ivf", "nut", "mxf", "yuv4mpegpipe",
)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream.

    ``width``/``height``: coded frame size in pixels (before rotation);
    ``sample_aspect_ratio``: pixel width / height (1.0 for square pixels);
    ``fps``: the stream's average frame rate (None if unknown); ``duration_sec``: the
    declared duration of the video (None if unknown); ``rotation``: degrees
    counter-clockwise the frames are turned to be upright (from the display matrix of
    the first decoded frame; 0 before decoding).
    """

    uri: str
    format_name: str
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    sample_aspect_ratio: float
    fps: float | None
    duration_sec: float | None
    rotation: int = 0


# --- Opening ------------------------------------------------------------------------

_thread_cap: int | None = None  # see limit_decode_threads


def limit_decode_threads(count: int) -> None:
    """Decode every video this process opens from now on with at most ``count`` FFmpeg
    threads, whatever its caller asks (0, FFmpeg's choice, included). The decode pool's
    children set 1: the pool runs one child per CPU, and a decoder of one thread starts
    no thread at all, so it cannot fail for want of one (see :func:`resource_error`)."""
    global _thread_cap
    if count < 1:
        raise ValueError(f"at least one decoder thread, not {count}")
    _thread_cap = count


def _decoder_threads(asked: int) -> int:
    if _thread_cap is None:
        return asked
    return _thread_cap if asked <= 0 else min(asked, _thread_cap)


def resource_error(uri: str, e: BaseException, doing: str) -> VideoError | None:
    """The transient VideoError for an FFmpeg error that says the system refused a
    resource rather than that the file is bad, else None: ``ENOMEM`` is
    DecodeOutOfMemory; ``EAGAIN`` is DecodeResourceExhausted. FFmpeg returns ``EAGAIN``
    where a thread of its own cannot start (``pthread_create``: no room for its stack
    under the address-space limit, or no task or memory left on a loaded machine):
    from ``avcodec_open2`` (decoder threads; PyAV opens the decoder at the first packet,
    so it surfaces from the first decode call) and from swscale's conversion of a frame
    (PyAV starts its threads anew for every frame unless told one thread). ``doing``
    says what was being done ("decoding")."""
    code = getattr(e, "errno", None)
    reason = getattr(e, "strerror", None) or _one_line(e)
    if code == errno.ENOMEM:
        return DecodeOutOfMemory(uri, f"{doing} failed: FFmpeg ran out of memory ({reason})")
    if code == errno.EAGAIN:
        return DecodeResourceExhausted(
            uri, f"{doing} failed: the system refused FFmpeg a resource ({reason}; most "
                 "likely a decoder thread that could not start): not a fault of the file, "
                 "it may decode when tried again")
    return None


class _DeadlineReader:
    """A file object for PyAV that stops reading once the clip's time budget is spent.

    The first read after the deadline raises DecodeTimeout (PyAV passes it through);
    later reads return EOF so that closing the container stays quiet. A local read that
    fails (EIO on a network mount) is a StorageError; remote files classify their own.
    """

    def __init__(self, raw, uri: str, deadline: float, budget: float):
        self._raw, self._uri, self._deadline, self._budget = raw, uri, deadline, budget
        self._expired = False

    def read(self, size: int = -1) -> bytes:
        if self._expired:
            return b""
        if time.monotonic() > self._deadline:
            self._expired = True
            raise DecodeTimeout(self._uri, f"reading took longer than the {self._budget:g} s budget")
        try:
            return self._raw.read(size)
        except VideoError:
            raise
        except OSError as e:
            raise StorageError(self._uri, f"read error: {_one_line(e)}") from None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True


def _open_bytes(uri: str, deadline: float, budget: float):
    """A readable, seekable binary stream of the file at ``uri``: local paths and file:
    URIs with ``open()``, the schemes of Beam's FileSystems through :class:`_RemoteFile`
    (bounded by ``deadline``); any other scheme (http://, ftp://...) is UnsupportedURI."""
    if fileio.is_local(uri):
        path = fileio.local_path(uri)
        missing = missing_local_file(uri)
        if missing is not None:
            raise missing
        if not os.path.isfile(path):  # a directory, a FIFO or a device: never block on it
            raise VideoNotFound(uri, "not a regular file")
        try:
            return open(path, "rb")
        except OSError as e:
            if isinstance(e, PermissionError):
                raise StorageError(uri, f"permission denied: {e.strerror}") from None
            raise VideoNotFound(uri, f"cannot be opened: {e.strerror}") from None
    check_uri_scheme(uri)
    return _RemoteFile(uri, deadline, budget)


def missing_local_file(uri: str) -> VideoNotFound | None:
    """VideoNotFound for a local path or file: URI where nothing exists (one ``stat``,
    nothing opened or read); None otherwise, remote URIs included."""
    if fileio.is_local(uri) and not os.path.exists(fileio.local_path(uri)):
        return VideoNotFound(uri, "no such file")
    return None


def check_uri_scheme(uri: str) -> None:
    """Raise UnsupportedURI unless ``uri`` is a local path, a file: URI or of a scheme
    Beam's FileSystems have registered (gs://, s3://...); http://, ftp://... are not
    read. Imports Beam's FileSystems for a remote URI (seconds, the first time)."""
    if fileio.is_local(uri):
        return
    scheme = fileio.uri_scheme(uri)
    schemes = fileio.readable_schemes()
    if scheme not in schemes:
        schemes = sorted(schemes, key=lambda s: (s != "gs", s))
        readable = ", ".join(["local paths", "file://", *(f"{s}://" for s in schemes)])
        raise UnsupportedURI(uri, f"cannot read {scheme}:// URIs; beam-i3d reads {readable}")


class _Worker:
    """One daemon thread that runs calls for a caller who waits at most until a
    deadline. A call still running then is abandoned (the thread finishes it, then
    exits): storage clients retry on their own for minutes, and the clip may not."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="beam-i3d-storage", daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, result, done = job
            try:
                result.append((True, fn(*args)))
            except BaseException as e:  # handed to the caller
                result.append((False, e))
            done.set()

    def call(self, fn, args: tuple, timeout: float):
        """``(finished, ok, value or exception)``."""
        result: list = []
        done = threading.Event()
        self._jobs.put((fn, args, result, done))
        if not done.wait(timeout):
            return False, False, None
        return (True, *result[0])

    def stop(self, last=None) -> None:
        """Run ``last`` (if any) after what is queued, then end the thread."""
        if last is not None:
            self._jobs.put((last, (), [], threading.Event()))
        self._jobs.put(None)


class _RemoteFile:
    """A file of Beam's FileSystems (gs://, s3://...) whose opening and reads are
    bounded by the clip's deadline, and whose failures are typed.

    Every call runs in a :class:`_Worker` thread: the storage clients' own retries
    (google-cloud-storage retries connection errors, 429 and 5xx for up to 120 s, each
    request with a 60 s timeout) cannot be bounded through Beam's FileSystems, so the
    caller stops waiting at the deadline with a StorageError and leaves the call to end
    on its own. Errors of the storage client become VideoNotFound (404) or StorageError
    (:func:`storage_error`).
    """

    def __init__(self, uri: str, deadline: float, budget: float):
        self._uri, self._deadline, self._budget = uri, deadline, budget
        self._worker = _Worker()
        self._raw = None
        self._abandoned: StorageError | None = None  # set when a call ran past the deadline
        try:
            self._raw = self._call(_open_with_filesystems, uri)
        except BaseException:
            self.close()
            raise

    def _call(self, fn, *args):
        if self._abandoned is not None:  # the worker is still busy with the late call
            raise self._abandoned
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DecodeTimeout(self._uri, f"reading took longer than the {self._budget:g} s budget")
        finished, ok, value = self._worker.call(fn, args, remaining)
        if not finished:
            self._abandoned = StorageError(
                self._uri, f"no answer from storage within the clip's {self._budget:g} s budget "
                           "(unreachable, or failing and retried)")
            raise self._abandoned
        if ok:
            return value
        if isinstance(value, VideoError):
            raise value
        raise storage_error(self._uri, value) from None

    def read(self, size: int = -1) -> bytes:
        return self._call(self._raw.read, size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._raw.seek, offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        raw, self._raw = self._raw, None
        self._worker.stop(raw.close if raw is not None else None)


def _open_with_filesystems(uri: str):
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(uri):
        raise VideoNotFound(uri, "no such file")
    return FileSystems.open(uri, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _root_cause(e: BaseException) -> BaseException:
    """The storage client's own exception under Beam's and google-api-core's wrappers
    (BeamIOError's ``exception_details``, RetryError's ``cause``)."""
    for _ in range(10):
        details = getattr(e, "exception_details", None)
        if isinstance(details, dict) and details:
            inner = next(iter(details.values()))
        else:
            inner = getattr(e, "cause", None) if type(e).__name__ == "RetryError" else None
        if not isinstance(inner, BaseException):
            return e
        e = inner
    return e


def _http_status(e: BaseException) -> int | None:
    code = getattr(e, "code", None)  # google.api_core's exceptions, urllib's HTTPError
    if not isinstance(code, int) or isinstance(code, bool):
        code = getattr(getattr(e, "response", None), "status_code", None)  # requests
    return code if isinstance(code, int) and 100 <= code <= 599 else None


def _is_network_error(e: BaseException) -> bool:
    if isinstance(e, (OSError, TimeoutError)):  # ConnectionError, socket.timeout, gaierror...
        return True
    for module, name in (("requests.exceptions", "RequestException"),
                         ("urllib3.exceptions", "HTTPError"),
                         ("http.client", "HTTPException")):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(e, cls):
            return True
    return False


def _is_auth_error(e: BaseException) -> bool:
    try:
        from google.auth.exceptions import GoogleAuthError
    except ImportError:
        return False
    return isinstance(e, GoogleAuthError)


def storage_error(uri: str, error: BaseException) -> VideoError:
    """The VideoError for an exception of a storage client (through Beam's FileSystems)
    opening or reading ``uri``: VideoNotFound for a real 404 (or another 4xx that says
    the path is wrong), else a one-line StorageError (transient): permission denied
    (403), not authorised (401), throttled (429), service errors (5xx), time-outs,
    network and credential failures, anything unknown."""
    if isinstance(error, VideoError):
        return error
    root = _root_cause(error)
    gave_up = " (after retries)" if root is not error and type(error).__name__ == "RetryError" else ""
    detail = _one_line(root)
    status = _http_status(root)
    if status in (404, 410) or isinstance(root, (FileNotFoundError, IsADirectoryError)):
        return VideoNotFound(uri, f"no such file ({detail})")
    if status == 403 or isinstance(root, PermissionError):
        return StorageError(uri, f"permission denied: {detail}")
    if status == 401:
        return StorageError(uri, f"not authorised (check the credentials): {detail}")
    if status == 429:
        return StorageError(uri, f"throttled by the storage service{gave_up}: {detail}")
    if status is not None and (status >= 500 or status == 408):
        return StorageError(uri, f"storage service error{gave_up}: {detail}")
    if status is not None and 400 <= status < 500:
        return VideoNotFound(uri, f"cannot be read: {detail}")
    if _is_auth_error(root):
        return StorageError(uri, f"credentials failed{gave_up}: {type(root).__name__}: {detail}")
    if _is_network_error(root):
        return StorageError(uri, f"network error{gave_up}: {type(root).__name__}: {detail}")
    if isinstance(root, ValueError):  # a malformed path (gs://bucket without an object...)
        return VideoNotFound(uri, f"not a readable path: {detail}")
    return StorageError(uri, f"cannot read{gave_up}: {type(root).__name__}: {detail}")


def _looks_like_video_container(head: bytes) -> bool:
    """True if the first bytes carry the signature of a common video container.

    Used only to word an error: FFmpeg reports an unknown format and a damaged header
    with the same code (AVERROR_INVALIDDATA), but a file that starts like an MP4 and
    does not open is a damaged video (CorruptVideo), not something else (NotAVideo).
    """
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
            or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"GIF8",
                                b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75"))
            or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
            or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47))


# Signatures of common files that are not videos -> what to call them in NotAVideo.
_NOT_VIDEO_SIGNATURES = (
    (lambda h: h.startswith(b"RIFF") and h[8:12] == b"WAVE", "an audio file (wav)"),
    (lambda h: h.startswith(b"fLaC"), "an audio file (flac)"),
    (lambda h: h.startswith(b"ID3"), "an audio file (mp3)"),
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xF6 == 0xF0, "an audio file (aac)"),
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0, "an audio file (mp3)"),
    (lambda h: h.startswith((b"#!AMR", b"FORM")), "an audio file"),
    (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), "an image (png)"),
    (lambda h: h.startswith(b"\xff\xd8\xff"), "an image (jpeg)"),
    (lambda h: h.startswith(b"RIFF") and h[8:12] == b"WEBP", "an image (webp)"),
    (lambda h: h.startswith((b"II*\x00", b"MM\x00*")), "an image (tiff)"),
    (lambda h: h.startswith(b"BM") and h[6:10] == b"\x00" * 4, "an image (bmp)"),
    (lambda h: h.startswith(b"%PDF"), "a PDF document"),
    (lambda h: h.startswith((b"PK\x03\x04", b"PK\x05\x06")), "a ZIP archive"),
    (lambda h: h.startswith(b"\x1f\x8b"), "a gzip archive"),
    (lambda h: h.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U"),
     "a playlist (m3u8); playlists are never opened"),
    (lambda h: h.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"ffconcat"),
     "an FFmpeg concat script; playlists are never opened"),
)


def _describe_not_a_video(head: bytes) -> str:
    """What a file that FFmpeg may not open as a video is, in plain words."""
    for matches, what in _NOT_VIDEO_SIGNATURES:
        if matches(head):
            return f"{what}, not a video"
    sample = head[:1024]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a cut multi-byte character at the end is fine
        text = sample[:e.start].decode("utf-8") if e.start > len(sample) - 4 else None
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "a text file, not a video"
    return ("not a video in a container beam-i3d opens (" + ", ".join(ACCEPTED_FORMATS) + ")")


class _OpenVideo:
    """An open container, its video stream and what we know about it (a context manager)."""

    def __init__(self, uri: str, limits: DecodeLimits, decode_threads: int = 0):
        self.uri = uri
        self.limits = limits
        check_uri_scheme(uri)  # before the clock starts: the first imports Beam
        self.budget = limits.decode_timeout_seconds
        self.deadline = time.monotonic() + self.budget
        self.seeked = False  # whether the demuxer has been moved from the beginning
        self._raw = _open_bytes(uri, self.deadline, self.budget)
        try:
            self._open(decode_threads)
        except BaseException:
            self.close()
            raise

    def _open(self, decode_threads: int) -> None:
        import av

        uri = self.uri
        self.container = None
        reader = _DeadlineReader(self._raw, uri, self.deadline, self.budget)
        head = reader.read(4096)
        if not head:
            raise NotAVideo(uri, "the file is empty (0 bytes)")
        reader.seek(0)
        try:
            self.container = av.open(
                reader, options={"format_whitelist": ",".join(ACCEPTED_FORMATS)},
                buffer_size=1 << 16,
                metadata_errors="replace")  # tags that are not UTF-8 must not stop us
        except av.error.FFmpegError as e:
            resource = resource_error(uri, e, "opening the container")
            if resource is not None:
                raise resource from None
            if _looks_like_video_container(head):
                raise CorruptVideo(uri, "the container does not open: damaged or truncated "
                                        f"header ({e.strerror})") from None
            raise NotAVideo(uri, _describe_not_a_video(head)) from None
        container = self.container
        # A cover picture (MP4/Matroska "attached_pic") is a video stream of one still.
        videos = [s for s in container.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type if s.type != "video" else "cover picture"
                            for s in container.streams})
            if not {"audio", "subtitle", "cover picture"} & set(kinds):
                # No streams at all, or only data streams: not an audio file but a video
                # container whose header (an MP4's moov, say) is damaged.
                found = f"only {', '.join(kinds)} streams" if kinds else "no streams"
                raise CorruptVideo(uri, f"the {container.format.name} container holds {found}: "
                                        "damaged header")
            raise NoVideoStream(uri, f"the {container.format.name} container has no video stream "
                                     f"({', '.join(kinds)})")
        stream = self.stream = videos[0]
        codec_context = stream.codec_context
        if codec_context is None or getattr(codec_context, "codec", None) is None:
            raise UnsupportedCodec(uri, f"no decoder for the video codec (tag {_codec_tag(stream)!r})")
        width, height = codec_context.width, codec_context.height
        if width * height > self.limits.max_pixels:
            raise VideoTooLarge(uri, f"{width}x{height} frames exceed the limit of "
                                     f"{self.limits.max_pixels} pixels")
        if width <= 0 or height <= 0:
            raise CorruptVideo(uri, f"the stream declares no frame size ({width}x{height})")
        sar = stream.sample_aspect_ratio or codec_context.sample_aspect_ratio
        sar = float(sar) if sar and sar > 0 else 1.0
        check_aspect_ratio(uri, width, height, sar, self.limits.max_aspect_ratio)
        self.time_base = stream.time_base or Fraction(1, 90000)
        # Time 0 of every clip: the video stream's start, else the container's, else 0.
        if stream.start_time is not None:
            self.origin_pts = stream.start_time
        elif container.start_time is not None:
            self.origin_pts = int(Fraction(container.start_time, 1_000_000) / self.time_base)
        else:
            self.origin_pts = 0
        self.declared_duration, self.exact_duration = _declared_duration(container, stream)
        if self.declared_duration is not None and self.declared_duration > self.limits.max_duration_seconds:
            raise VideoTooLong(uri, f"the video lasts {float(self.declared_duration):.1f} s, over the "
                                    f"limit of {self.limits.max_duration_seconds:g} s")
        # The decoder itself refuses frames over the pixel limit (a stream may change size).
        codec_context.options = {"max_pixels": str(self.limits.max_pixels)}
        codec_context.thread_type = "AUTO"
        codec_context.thread_count = _decoder_threads(decode_threads)
        rate = stream.average_rate or stream.guessed_rate
        self.info = VideoInfo(
            uri=uri, format_name=container.format.name, codec=codec_context.name,
            pix_fmt=codec_context.pix_fmt, width=width, height=height,
            sample_aspect_ratio=sar,
            fps=float(rate) if rate else None,
            duration_sec=None if self.declared_duration is None else float(self.declared_duration))

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(self.uri, f"decoding took longer than the {self.budget:g} s budget")

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _codec_tag(stream) -> str:
    try:
        return stream.codec_context.codec_tag
    except Exception:
        return "?"


def _declared_duration(container, stream) -> tuple[Fraction | None, bool]:
    """``(duration in seconds or None, whether it is exact)`` of the video stream.

    Exact: the per-stream duration of MP4/MOV (sum of sample durations) or Matroska's
    per-track DURATION tag. Otherwise the container's overall duration, which FFmpeg may
    have estimated from the bit rate (MPEG-TS): good enough for the duration limit, not
    for declaring a file truncated.
    """
    if stream.duration and stream.time_base and "mov" in container.format.name:
        return Fraction(stream.duration) * stream.time_base, True
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds), True
        except ValueError:
            pass
    if container.duration and container.duration > 0:
        return Fraction(container.duration, 1_000_000), False
    return None, False


def probe_video(uri: str, limits: DecodeLimits | None = None) -> VideoInfo:
    """Open ``uri`` and check it against ``limits`` without decoding a frame.

    Raises the VideoError subclasses of :func:`decode_clip` that the headers can tell:
    VideoNotFound, UnsupportedURI, StorageError, NotAVideo, NoVideoStream,
    UnsupportedCodec, CorruptVideo, VideoTooLarge, VideoTooLong, UnsupportedShape,
    DecodeTimeout.
    """
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        return video.info


@dataclasses.dataclass(frozen=True)
class Extent:
    """How long a video is (seconds from the video stream's start, exact fractions):
    ``declared``: the duration its container declares (None: none), ``exact``: whether
    that is a per-stream duration (see :func:`_declared_duration`), ``frames_end``: where
    its last frame really ends, from the packets' timestamps (None: the packets carry
    none)."""

    declared: Fraction | None
    exact: bool
    frames_end: Fraction | None


def frames_end(video: _OpenVideo) -> Fraction | None:
    """Where the video stream's last frame ends (s from its start), from the packets'
    presentation times and durations, without decoding a frame: seek to the last keyframe
    (the demuxer's index), read the packets from there to the end of the file (the end of
    the last frame shown: the largest ``pts + duration``; packets an edit list discards do
    not count). Where that seek fails or finds no packet, every packet from the start is
    read (within the clip's time budget: DecodeTimeout). None if no packet has a time.
    Leaves the demuxer moved (``video.seeked``)."""
    import av

    container, stream, tb = video.container, video.stream, video.time_base
    rate = stream.average_rate or stream.guessed_rate

    def scan() -> Fraction | None:
        last = second = None  # the two largest presentation times (pts)
        end = None  # the largest pts + duration of the packets that carry a duration
        last_duration = 0
        for packet in container.demux(stream):
            video.check_deadline()
            if packet.pts is None or packet.is_discard:
                continue
            if last is None or packet.pts > last:
                last, second, last_duration = packet.pts, last, packet.duration or 0
            elif packet.pts != last and (second is None or packet.pts > second):
                second = packet.pts
            if packet.duration:
                value = packet.pts + packet.duration
                end = value if end is None else max(end, value)
        if last is None:
            return None
        # As decoding times the last frame: its duration, else the interval before it.
        if last_duration:
            tail = Fraction(last_duration) * tb
        elif second is not None:
            tail = Fraction(last - second) * tb
        else:
            tail = 1 / Fraction(rate) if rate else Fraction(1, 25)
        ends = Fraction(last - video.origin_pts) * tb + tail
        if end is not None:
            ends = max(ends, Fraction(end - video.origin_pts) * tb)
        return ends

    video.seeked = True
    found = None
    try:
        target = video.origin_pts + int(video.limits.max_duration_seconds / tb)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        found = scan()
    except (av.error.FFmpegError, OverflowError, ValueError):
        found = None
    if found is None:  # no index, or the seek went past every packet: read them all
        try:
            container.seek(video.origin_pts, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            pass  # the demuxer stays where it is: reading on is what can be done
        found = scan()
    return found


def probe_extent(uri: str, limits: DecodeLimits | None = None) -> Extent:
    """The video's :class:`Extent`: its declared duration and where its frames really
    end (:func:`frames_end`; no frame decoded). Raises what :func:`probe_video` raises,
    CorruptVideo where the packets cannot be read, and VideoTooLong where the frames
    run past ``limits.max_duration_seconds`` whatever the header declares."""
    import av

    limits = limits or DecodeLimits()
    with _OpenVideo(uri, limits) as video:
        try:
            end = frames_end(video)
        except VideoError:
            raise
        except IndexError:  # see beam_i3d.media.video._frames
            raise CorruptVideo(uri, "a packet of a stream that was not in the header "
                                    "(damaged file)") from None
        except (av.error.FFmpegError, OverflowError, ValueError) as e:
            raise (resource_error(uri, e, "reading the packets")
                   or CorruptVideo(uri, f"reading the packets failed: {_one_line(e)}")) from None
        if end is not None and end > limits.max_duration_seconds:
            declared = ("declares no duration" if video.declared_duration is None else
                        f"declares {float(video.declared_duration):.3f} s")
            raise VideoTooLong(uri, f"the video's frames run to {float(end):.1f} s (its "
                                    f"container {declared}), over the limit of "
                                    f"{limits.max_duration_seconds:g} s")
        return Extent(video.declared_duration, video.exact_duration, end)


VFR_SPREAD = 0.1  # frame durations spread wider than this fraction of their median: VFR


@dataclasses.dataclass(frozen=True)
class FrameTimes:
    """Every frame of a video's stream in presentation order (``--fps native``):
    ``pts``, int64 ``[N]`` sorted presentation times in ``time_base`` units from the
    stream's start (frame k is on screen from ``pts[k] * time_base`` seconds); ``end``:
    where the last frame ends (s, exact: its pts + its duration); ``declared``/``exact``:
    as :class:`Extent`; ``declared_rate``: the stream's average frame rate (fps, None if
    it declares none); ``variable``: whether the frame durations (the steps between
    presentation times) spread wider than :data:`VFR_SPREAD` of their median: a
    variable-frame-rate source (or dropped frames), whose frames are taken as they are."""

    pts: object
    time_base: Fraction
    end: Fraction
    declared: Fraction | None
    exact: bool
    declared_rate: Fraction | None
    variable: bool

    @property
    def count(self) -> int:
        return int(len(self.pts))

    def time(self, k: int) -> Fraction:
        """Presentation time of frame ``k`` (s, exact); ``time(N)`` is :attr:`end`."""
        return self.end if k >= self.count else int(self.pts[k]) * self.time_base

    @property
    def rate(self) -> float | None:
        """Frames per second of the frames themselves ((N - 1) over the span of their
        times), else the declared rate; None when neither is known."""
        if self.count >= 2 and self.pts[-1] > self.pts[0]:
            return float((self.count - 1) / (int(self.pts[-1] - self.pts[0]) * self.time_base))
        return None if self.declared_rate is None else float(self.declared_rate)


def frame_spread_is_variable(pts) -> bool:
    """Whether sorted presentation times step unevenly (see :class:`FrameTimes`)."""
    import numpy as np

    steps = np.diff(np.asarray(pts, np.int64))
    steps = steps[steps > 0]
    if len(steps) < 2:
        return False
    median = float(np.median(steps))
    return float(steps.max() - steps.min()) > VFR_SPREAD * median + 1  # 1 tick: rounding


def probe_frame_times(uri: str, limits: DecodeLimits | None = None) -> FrameTimes:
    """Every packet's presentation time of the video stream, read from the packets
    (no frame decoded; every packet of the file is read, within the clip's time budget):
    the frames ``--fps native`` takes (see :class:`FrameTimes`). Raises what
    :func:`probe_video` raises, CorruptVideo where the packets cannot be read,
    VideoTooLong past ``limits.max_duration_seconds``, and UnknownFrameRate where the
    packets carry no presentation times (the frames cannot be placed in time)."""
    import av
    import numpy as np

    from beam_i3d.errors import UnknownFrameRate

    limits = limits or DecodeLimits()
    with _OpenVideo(uri, limits) as video:
        stream, tb = video.stream, video.time_base
        pts, last_duration = [], {}
        try:
            for packet in video.container.demux(stream):
                video.check_deadline()
                if packet.pts is None or packet.is_discard or packet.size == 0:
                    continue
                pts.append(packet.pts - video.origin_pts)
                if packet.duration:
                    last_duration[packet.pts - video.origin_pts] = packet.duration
        except VideoError:
            raise
        except IndexError:
            raise CorruptVideo(uri, "a packet of a stream that was not in the header "
                                    "(damaged file)") from None
        except (av.error.FFmpegError, OverflowError, ValueError) as e:
            raise CorruptVideo(uri, f"reading the packets failed: {_one_line(e)}") from None
        rate = stream.average_rate or stream.guessed_rate
        if not pts:
            raise UnknownFrameRate(uri, "its packets carry no presentation times, so its own "
                                        "frames (--fps native) cannot be placed in time")
        times = np.unique(np.asarray(pts, np.int64))  # sorted; a repeated time is one frame
        last = int(times[-1])
        if last in last_duration:
            tail = Fraction(last_duration[last]) * tb
        elif len(times) >= 2:
            tail = Fraction(last - int(times[-2])) * tb
        elif rate:
            tail = 1 / Fraction(rate)
        else:
            raise UnknownFrameRate(uri, "one frame, and the stream declares no frame rate")
        end = last * tb + tail
        if end > limits.max_duration_seconds:
            raise VideoTooLong(uri, f"the video's frames run to {float(end):.1f} s, over the "
                                    f"limit of {limits.max_duration_seconds:g} s")
        return FrameTimes(times, Fraction(tb), end, video.declared_duration,
                          video.exact_duration, Fraction(rate) if rate else None,
                          frame_spread_is_variable(times))


def probe_duration(uri: str, limits: DecodeLimits | None = None) -> Fraction | None:
    """The video stream's declared duration in seconds (exact fraction), from the
    container's header without decoding a frame; None if it declares none. Raises what
    :func:`probe_video` raises."""
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        return video.declared_duration
