"""Decode and preprocess clips in child processes, so that a file that crashes, hangs or
exhausts FFmpeg costs one clip, never the worker.

:class:`DecodePool` keeps up to ``processes`` children of our own (Python processes
started with multiprocessing's ``spawn`` or ``forkserver`` method: never ``fork``, which
would copy a process that runs TensorFlow threads; no shell, no other programs). Each
child takes one clip at a time and runs :func:`beam_i3d.media.preprocess.decode_for_streams`
and, where it can, :func:`beam_i3d.media.preprocess.finish_clip`, so a clip comes back exactly
as :func:`beam_i3d.media.preprocess.preprocess_clip` would make it in process (bit for bit).

Besides clips, a child runs other work that opens untrusted media under the same rules
(:meth:`DecodePool.submit_call`: a module-level function of the URI and the limits;
the windowed job's length probes, ``fvd``'s frame counts and clips).

Children are started when first needed and reused. Each sets OpenCV to one thread,
decodes every video it opens (clips, windowed items, probes, ``fvd``'s readers) with one
FFmpeg thread (:func:`~beam_i3d.media.video_open.limit_decode_threads`: the pool spreads
the CPUs over clips instead, and a decoder that starts no thread cannot fail for want of
one on a loaded machine), and limits its address space to ``DecodeLimits.memory_mb`` MiB
(``RLIMIT_AS``).

What can go wrong, and what the clip's result is then (every one a
:class:`~beam_i3d.errors.VideoError` whose message starts with the URI):

* the normal decode path raises (NotAVideo, CorruptVideo, DecodeTimeout,
  DecodeResourceExhausted...): the same class and message, rebuilt in the parent;
* a MemoryError or an allocation failure in the child (numpy, FFmpeg's ENOMEM, OpenCV's
  "Insufficient memory"): DecodeOutOfMemory; the child is replaced, since its heap may
  be in a bad state;
* the child is killed by SIGKILL that the pool did not send (the kernel's OOM killer):
  DecodeOutOfMemory;
* the child dies of any other signal (SIGSEGV, SIGABRT...) or exits: DecoderCrashed,
  naming the signal or the exit status;
* the child is still busy at its hard time limit: the pool SIGKILLs it, DecodeTimeout;
* anything else raised in the child comes back as a :class:`ChildException` subclass
  named like the original exception (so an error row's ``error_type`` is, say,
  ``KeyError``), with its message and the child's traceback.

After a crash, a kill or a time-out a fresh child takes the next clip; every submitted
key gets exactly one result.

The hard time limit of a clip, counted from when a child takes it:
``decode_timeout_seconds + grace_seconds`` for opening, reading and decoding (the
decoder checks ``decode_timeout_seconds`` itself at every read and packet and raises
DecodeTimeout; the kill is for a read or decode call that never returns). When the
child also computes the optical flow (the ``opencv`` backend), the limit is moved, once
the frames are decoded, to ``grace_seconds + flow_seconds_per_megapixel_pair * (T - 1) *
H * W / 1e6`` from then, for T frames of H x W pixels (the flow's cost is fixed by the
clip's size; default 200 s per megapixel-pair, about 7x the 27 s per megapixel-pair,
2.3 s per 256x340 pair, that OpenCV's TV-L1 took on one thread of the loaded
development machine: a safety net, not a budget).

Flow with the ``tf`` backend (TensorFlow, maybe on the GPU) is not computed in a child:
children never import TensorFlow. The child then sends back the RGB crops and the
grayscale frames, and the parent runs :func:`~beam_i3d.media.preprocess.finish_clip` when the
result is collected (:meth:`DecodePool.next_result`); the ``opencv`` backend runs in the
children, spreading its CPU work over the pool. So it does for a windowed work item: the
child finds which frame pairs the item's windows need (:func:`beam_i3d.job.windows.
pair_runs`), computes each of those pairs' flow once (:func:`beam_i3d.media.preprocess.
span_flow`; overlapping windows share their pairs: at a stride of 4 frames and windows
of 16, each pair once instead of 4 times), the limit then covering those pairs, and
sends the span's crops with the span's flow fields; the parent cuts the windows and
finishes each with its slice of the fields (:func:`~beam_i3d.media.preprocess.
window_flow`), bit for bit the flow of that window's frames alone. With ``tf`` the
parent does the same with the span's grayscale frames. (``flow_per_window=True``, kept
for the benchmark, computes each window's flow on its own frames instead, as before.)

Arrays travel in shared-memory segments (``/dev/shm``), not through the pipe: the child
decodes a clip's frames straight into segments (:mod:`beam_i3d.media.shared_arrays`) and
copies any other array into one, each named ``bi3d<parent pid>p<pool token>c<child
number>_<task>_<index>``, and sends names, shapes and dtypes; the parent maps the
segment (the result's arrays are views of it, not copies) and unlinks its name at once,
so its memory goes back when the last view of the array is dropped. A child that dies
mid-clip may leave segments of its current task: the parent unlinks those names, and
:meth:`DecodePool.close` removes any ``/dev/shm`` entry with the pool's prefix.

What runs in a child: :mod:`beam_i3d.media.decode_child` (with the test-only fault hook,
``HOOK_ENV``); how its exceptions come back: :mod:`beam_i3d.media.child_errors`.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import queue
import signal
import threading
import time
from typing import Any, Hashable, Iterator, NamedTuple, Sequence

from beam_i3d.errors import (
    DecodeOutOfMemory,
    DecoderCrashed,
    DecodeTimeout,
    VideoError,
)
from beam_i3d.media.child_errors import ChildException, child_exception, rebuild_error
from beam_i3d.media.decode_child import HOOK_ENV, _FlowedSpan, _child_main
from beam_i3d.media.flow import DEFAULT_FLOW_BACKEND
from beam_i3d.media.recipe import DEFAULT_MAX_SECONDS, DecodeLimits
from beam_i3d.media.shared_arrays import (
    _DECODE_SEGMENTS,
    _MAX_ARRAYS,
    _SHM_DIR,
    _from_shared,
    _segment_name,
    _unlink_segment,
)

__all__ = ["ChildException", "DecodePool", "Finished", "HOOK_ENV", "child_exception",
           "clip_time_limit", "flow_time_limit", "probe", "probe_frames"]

_LOG = logging.getLogger(__name__)

GRACE_SECONDS = 5.0  # beyond decode_timeout_seconds before a child is killed
FLOW_SECONDS_PER_MEGAPIXEL_PAIR = 200.0  # time allowed for opencv flow in a child
START_TIMEOUT_SECONDS = 120.0  # for a new child to import its modules and say it is ready
_START_FAILURES = 3  # children in a row that die before ready: the pool gives up
CHILD_FLOW_BACKENDS = ("opencv",)  # flow backends run in the children (the rest: parent)


class Finished(NamedTuple):
    """One clip's outcome: ``key`` as submitted; ``result`` the ClipTensors, or the
    exception (a VideoError subclass for bad or dangerous input, else a
    :class:`ChildException` or the parent's own exception); ``seconds``: wall time from
    a child taking the clip to its result (plus the parent's flow, for ``tf``)."""

    key: Hashable
    result: Any
    seconds: float


@dataclasses.dataclass
class Probed:
    """The result of a probe task (:meth:`DecodePool.submit_probe`), in seconds (exact
    fractions): ``duration``, the video's declared duration (None if its container
    declares none); ``exact``, whether that is a per-stream duration; ``frames_end``,
    where its last frame really ends, from the packets (None: they carry no times; see
    :func:`beam_i3d.media.video_open.frames_end`)."""

    duration: Any
    exact: bool = False
    frames_end: Any = None


def clip_time_limit(limits: DecodeLimits, grace_seconds: float = GRACE_SECONDS) -> float:
    """Seconds a child may spend opening, reading and decoding one clip before it is
    killed: ``limits.decode_timeout_seconds + grace_seconds``."""
    return limits.decode_timeout_seconds + grace_seconds


def flow_time_limit(pairs: int, height: int, width: int, grace_seconds: float = GRACE_SECONDS,
                    seconds_per_megapixel_pair: float = FLOW_SECONDS_PER_MEGAPIXEL_PAIR) -> float:
    """Seconds a child may spend, once decoded, computing ``pairs`` flow fields of
    ``height`` x ``width`` pixels and sending the clip back."""
    return grace_seconds + seconds_per_megapixel_pair * max(1, pairs) * height * width / 1e6


# --- Tasks run in a child --------------------------------------------------------------


def probe(uri: str, limits: DecodeLimits) -> Probed:
    """A probe task (:meth:`DecodePool.submit_probe`), run in a child."""
    from beam_i3d.media.video import probe_extent

    extent = probe_extent(uri, limits)
    return Probed(extent.declared, extent.exact, extent.frames_end)


def probe_frames(uri: str, limits: DecodeLimits):
    """A probe task for ``--fps native`` (:meth:`DecodePool.submit_call`), run in a child:
    every frame's presentation time from the packets
    (:func:`beam_i3d.media.video_open.probe_frame_times`)."""
    from beam_i3d.media.video_open import probe_frame_times

    return probe_frame_times(uri, limits)


# --- The parent ------------------------------------------------------------------------


@dataclasses.dataclass
class _Task:
    key: Hashable
    seq: int
    uri: str
    start_sec: float | None
    end_sec: float | None
    options: dict
    finish_here: bool  # False: the parent runs finish_clip (tf flow)


@dataclasses.dataclass
class _Child:
    number: int
    process: Any
    conn: Any
    prefix: str
    started: float
    ready: bool = False
    task: _Task | None = None
    began: float = 0.0  # when it took its task (monotonic s)
    deadline: float = 0.0  # start timeout, then the task's hard limit
    limit_text: str = ""
    killed_for: str | None = None  # "timeout", "start", "retire", "close": we killed it


class DecodePool:
    """Decode clips in ``processes`` child processes (see the module doc).

    ``limits``: the DecodeLimits of every clip (and ``memory_mb`` of every child).
    ``start_method``: ``"spawn"`` or ``"forkserver"``. ``grace_seconds`` and
    ``flow_seconds_per_megapixel_pair`` set the hard time limits (module doc).
    Thread-safe for one submitting and collecting thread; a background thread hands out
    clips and watches the children. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, processes: int, limits: DecodeLimits | None = None, *,
                 start_method: str = "spawn", grace_seconds: float = GRACE_SECONDS,
                 flow_seconds_per_megapixel_pair: float = FLOW_SECONDS_PER_MEGAPIXEL_PAIR,
                 start_timeout_seconds: float = START_TIMEOUT_SECONDS):
        if processes < 1:
            raise ValueError(f"a decode pool needs at least 1 process, got {processes}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver' (never fork), "
                             f"got {start_method!r}")
        self.processes = int(processes)
        self.limits = limits or DecodeLimits()
        self._context = multiprocessing.get_context(start_method)
        self._grace = float(grace_seconds)
        self._flow_rate = float(flow_seconds_per_megapixel_pair)
        self._start_timeout = float(start_timeout_seconds)
        # Unique per pool, not only per process: Beam may set up several DoFn instances
        # (so several pools) in one worker process, and each pool's close() removes the
        # segments under its own prefix.
        self._prefix = f"bi3d{os.getpid()}p{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._pending: collections.deque[_Task] = collections.deque()
        self._outstanding: set = set()  # keys submitted and not yet collected
        self._results: queue.Queue = queue.Queue()
        self._children: list[_Child] = []
        self._numbers = 0
        self._seq = 0
        self._start_failures = 0
        self._closed = False
        self._broken: BaseException | None = None
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._thread = threading.Thread(target=self._run, name="decode-pool", daemon=True)
        self._thread.start()

    # -- the caller's side --

    def submit(self, key: Hashable, uri: str, start_sec: float | None = None,
               end_sec: float | None = None, *, streams: Sequence[str] = ("rgb",),
               max_seconds: float | None = DEFAULT_MAX_SECONDS, quantize_flow: bool = True,
               flow_backend: str = DEFAULT_FLOW_BACKEND,
               flow_batch_pairs: int | None = None, windows: Sequence | None = None,
               fps=None, loop_to: int | None = None, flow_per_window: bool = False,
               crops: str = "center") -> None:
        """Queue one clip; the arguments are those of
        :func:`~beam_i3d.media.preprocess.preprocess_clip` (limits: the pool's). ``key``
        (hashable) must not be in flight already. Raises ValueError / UnknownFlowBackend
        for bad arguments (nothing is queued then), RuntimeError if the pool is closed.

        ``windows`` (:class:`beam_i3d.job.windows.Window`, consecutive): a work item of a
        windowed run instead of a clip. The child decodes the span of the windows once,
        as one clip without a cap (``start_sec``, ``end_sec`` and ``max_seconds`` are
        ignored), and the parent cuts each window from it and finishes it
        (:func:`beam_i3d.job.windows.cut_windows`, then ``finish_clip``; the ``opencv``
        flow of each window is computed in the child, ``tf``'s here): the result is then
        a list with, per window, its ClipTensors or its exception. Frame windows
        (:func:`beam_i3d.job.windows.frame_windows`) are decoded at ``fps`` (None: 25;
        "native": the video's own frames) from their exact start, the span's frame count
        and no more, and looped to ``loop_to`` frames where shorter (the window's W).
        The flow of each frame pair the windows need is computed once per item and
        sliced (``flow_per_window``: per window, as before; for benchmarks). ``crops``
        five or ten: the clips hold whole resized frames and fields, not centre crops
        (:mod:`beam_i3d.media.crops`)."""
        from beam_i3d.media.preprocess import check_streams

        streams = check_streams(streams, flow_backend, load_backend=False)
        finish_here = "flow" not in streams or flow_backend in CHILD_FLOW_BACKENDS
        if windows is not None:
            from beam_i3d.job.windows import span_of

            windows = list(windows)
            if not windows:
                raise ValueError("a work item needs at least one window")
            from beam_i3d.job.windows import span_frames

            start, end = span_of(windows)
            start_sec, end_sec, max_seconds = float(start), float(end), None
            max_frames = span_frames(windows)
            if max_frames is not None:  # frame windows: exact start, a frame count
                start_sec, end_sec = start, None
            # The decode budget is per clip of up to 10 s: an item gets it per 10 s of
            # its span (a minute of video: six budgets).
            scale = max(1.0, float(end - start) / DEFAULT_MAX_SECONDS)
            item_limits = dataclasses.replace(
                self.limits, decode_timeout_seconds=self.limits.decode_timeout_seconds * scale)
            finish_here = False  # the parent cuts the windows, then finishes each
        # A child computes the flow of an item's windows where it would a clip's.
        flow_in_child = (windows is not None and "flow" in streams
                         and flow_backend in CHILD_FLOW_BACKENDS)
        if not finish_here and "flow" in streams and not flow_in_child:
            check_streams(streams, flow_backend)  # the parent will need the backend
        options = {"streams": streams, "max_seconds": max_seconds, "quantize_flow": quantize_flow,
                   "flow_backend": flow_backend, "flow_batch_pairs": flow_batch_pairs,
                   "windows": windows, "flow_in_child": flow_in_child,
                   "limits": item_limits if windows is not None else None, "crops": crops}
        if windows is not None:
            options.update(fps=fps, max_frames=max_frames, loop_to=loop_to,
                           flow_per_window=flow_per_window)
        self._queue(key, uri, start_sec, end_sec, options, finish_here)

    def submit_probe(self, key: Hashable, uri: str) -> None:
        """Queue a probe of ``uri``'s length: its declared duration and where its frames
        really end (from the packets, no frame decoded); its result is a :class:`Probed`
        or the exception (the errors of :func:`beam_i3d.media.video.probe_extent`)."""
        self.submit_call(key, uri, probe)

    def submit_call(self, key: Hashable, uri: str, function, *args,
                    arrays: Sequence[str] = ()) -> None:
        """Queue ``function(uri, limits, *args)`` (limits: the pool's) in a child: other
        work that opens untrusted media (a probe, the frame count or the frames of an
        ``fvd`` clip), with a clip's isolation, time limit and errors (module doc).

        ``function`` travels by name, so it must be a module-level function; it must not
        import TensorFlow. Its result comes back pickled, except that the fields of a
        dataclass result named in ``arrays`` (numpy arrays) travel in shared memory.
        Raises RuntimeError if the pool is closed, ValueError if ``key`` is in flight or
        ``arrays`` names more fields than a result may move."""
        if len(arrays) > _MAX_ARRAYS:
            raise ValueError(f"a result may move at most {_MAX_ARRAYS} arrays, got {len(arrays)}")
        self._queue(key, uri, None, None, {"call": (function, tuple(args), tuple(arrays))}, True)

    def _queue(self, key, uri, start_sec, end_sec, options, finish_here) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            if self._broken is not None:
                raise RuntimeError(f"the decode pool failed: {self._broken!r}")
            if key in self._outstanding:
                raise ValueError(f"key {key!r} is already in flight")
            self._seq += 1
            self._outstanding.add(key)
            self._pending.append(_Task(key, self._seq, uri, start_sec, end_sec, options,
                                       finish_here))
        self._wake()

    def in_flight(self) -> int:
        """Clips submitted whose result has not been collected yet."""
        with self._lock:
            return len(self._outstanding)

    def next_result(self, timeout: float | None = None) -> Finished | None:
        """The next finished clip, waiting up to ``timeout`` seconds (None: until one
        finishes); None if none finished in time or nothing is in flight."""
        if self.in_flight() == 0:
            return None
        try:
            raw = self._results.get(timeout=timeout) if timeout != 0 else self._results.get_nowait()
        except queue.Empty:
            return None
        return self._deliver(*raw)

    def ready(self) -> list[Finished]:
        """Every clip finished by now (without waiting)."""
        done = []
        while True:
            finished = self.next_result(timeout=0)
            if finished is None:
                return done
            done.append(finished)

    def results(self) -> Iterator[Finished]:
        """The result of every clip in flight, as they finish, until none is left."""
        while self.in_flight():
            finished = self.next_result()
            if finished is not None:
                yield finished

    def close(self) -> None:
        """Stop the children and remove their shared memory. Results not collected
        are dropped (collect them first with :meth:`results`). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=30)
        for child in list(self._children):
            self._stop_child(child)
        self._children.clear()
        for path in glob.glob(os.path.join(_SHM_DIR, self._prefix + "c*")):
            try:
                os.unlink(path)
            except OSError:
                pass
        for conn in (self._wake_r, self._wake_w):
            conn.close()

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _deliver(self, task: _Task, result, seconds: float) -> Finished:
        if not isinstance(result, BaseException) and not task.finish_here:
            from beam_i3d.media.preprocess import finish_clip

            started = time.monotonic()
            options = task.options

            def finish(clip, flow=None):
                try:
                    return finish_clip(clip, streams=options["streams"],
                                       quantize_flow=options["quantize_flow"],
                                       flow_backend=options["flow_backend"],
                                       flow_batch_pairs=options["flow_batch_pairs"], flow=flow,
                                       loop_to=options.get("loop_to") or 0,
                                       crops=options["crops"])
                except Exception as e:  # noqa: BLE001: the clip's (or window's) result
                    return e

            if options.get("windows"):
                from beam_i3d.job.windows import cut_windows

                flowed = result if isinstance(result, _FlowedSpan) else None
                if flowed is not None:
                    result = dataclasses.replace(flowed.span, rgb=flowed.rgb)
                try:
                    parts = cut_windows(result, options["windows"])
                    fields = offsets = None
                    if (flowed is None and "flow" in options["streams"]
                            and not options.get("flow_per_window")):
                        fields, offsets = self._span_flow(result, options)
                except Exception as e:  # noqa: BLE001: the whole item's result
                    result = e
                else:
                    del result  # the windows hold views of the span's arrays
                    if flowed is not None:
                        result = self._finish_flowed(task, parts, flowed, finish)
                    elif fields is not None:
                        result = [p if isinstance(p, BaseException) else
                                  finish(p, self._slice_flow(fields, where, options))
                                  for p, where in zip(parts, offsets)]
                    else:
                        result = [p if isinstance(p, BaseException) else finish(p)
                                  for p in parts]
            else:
                result = finish(result)
            seconds += time.monotonic() - started
        with self._lock:
            self._outstanding.discard(task.key)
        return Finished(task.key, result, seconds)

    @staticmethod
    def _span_flow(span, options):
        """``tf`` flow of an item, here: the span's fields, each needed pair once, and
        where each window lies in the span."""
        from beam_i3d.job.windows import pair_runs, window_offsets
        from beam_i3d.media.preprocess import span_flow

        offsets = window_offsets(span, options["windows"])
        fields = span_flow(span.gray, pair_runs(offsets),
                           quantize_flow=options["quantize_flow"],
                           flow_backend=options["flow_backend"],
                           flow_batch_pairs=options["flow_batch_pairs"],
                           crops=options["crops"])
        return fields, offsets

    @staticmethod
    def _slice_flow(fields, where, options):
        from beam_i3d.media.preprocess import window_flow

        first, count = where
        return window_flow(fields, first, count, quantize_flow=options["quantize_flow"],
                           loop_to=options.get("loop_to") or 0,
                           crops=options["crops"])

    def _finish_flowed(self, task: _Task, parts: list, flowed: _FlowedSpan, finish) -> list:
        """Each window of an item whose flow the child computed: its ClipTensors with its
        slice of ``flowed.flow``, or its exception (the cut's, or its flow's)."""
        from beam_i3d.job.windows import window_offsets

        out, offset = [], 0
        options = task.options
        if flowed.per_window:
            for part, length, error in zip(parts, flowed.flow_lengths, flowed.errors):
                if isinstance(part, BaseException):
                    out.append(part)
                elif error is not None:
                    out.append(self._rebuild_error(task, error))
                else:
                    out.append(finish(part, flowed.flow[offset:offset + length]))
                offset += length
            return out
        span = dataclasses.replace(flowed.span, rgb=flowed.rgb)
        offsets = window_offsets(span, options["windows"])
        for part, where, error in zip(parts, offsets, flowed.errors):
            if isinstance(part, BaseException):
                out.append(part)
            elif error is not None:
                out.append(self._rebuild_error(task, error))
            else:
                out.append(finish(part, self._slice_flow(flowed.flow, where, options)))
        return out

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"w")
        except OSError:
            pass

    # -- the background thread --

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                self._dispatch()
                self._wait_and_handle()
        except BaseException as e:  # noqa: BLE001: never leave a clip without a result
            _LOG.exception("decode pool thread failed")
            with self._lock:
                self._broken = e
                pending = list(self._pending)
                self._pending.clear()
            for task in pending + [c.task for c in self._children if c.task is not None]:
                self._results.put((task, e, 0.0))

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                idle = next((c for c in self._children if c.ready and c.task is None), None)
                if idle is None:
                    starting = sum(1 for c in self._children if not c.ready)
                    if (len(self._children) < self.processes
                            and starting < len(self._pending)):
                        pass  # start one below, outside the lock
                    else:
                        return
                else:
                    task = self._pending.popleft()
            if idle is None:
                self._start_child()
                continue
            now = time.monotonic()
            limits = task.options.get("limits") or self.limits
            try:
                idle.conn.send((task.seq, task.uri, task.start_sec, task.end_sec,
                                task.options, limits, task.finish_here))
            except (BrokenPipeError, EOFError, OSError):
                with self._lock:
                    self._pending.appendleft(task)
                self._on_exit(idle)
                continue
            idle.task, idle.began = task, now
            limit = clip_time_limit(limits, self._grace)
            idle.deadline = now + limit
            idle.limit_text = (f"{limit:g} s (the {limits.decode_timeout_seconds:g} s decode "
                               f"budget + {self._grace:g} s grace)")

    def _start_child(self) -> None:
        self._numbers += 1
        prefix = f"{self._prefix}c{self._numbers}"
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_child_main, name=f"decode-{self._numbers}",
                                        args=(child_conn, prefix, self.limits.memory_mb),
                                        daemon=True)
        process.start()
        child_conn.close()
        now = time.monotonic()
        self._children.append(_Child(self._numbers, process, parent_conn, prefix, now,
                                     deadline=now + self._start_timeout))

    def _wait_and_handle(self) -> None:
        children = list(self._children)
        waitables = [self._wake_r]
        for child in children:
            waitables += [child.conn, child.process.sentinel]
        now = time.monotonic()
        deadlines = [c.deadline for c in children if c.task is not None or not c.ready]
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        ready = multiprocessing.connection.wait(waitables, timeout)
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
        for child in children:
            alive = True
            while alive and child.conn.poll():
                try:
                    message = child.conn.recv()
                except Exception:  # noqa: BLE001: EOF, or a message cut short by a death
                    alive = False
                    break
                alive = self._on_message(child, message)
            if not alive or child.process.sentinel in ready:
                self._on_exit(child)
        now = time.monotonic()
        for child in list(self._children):
            if (child.task is not None or not child.ready) and now > child.deadline:
                self._kill(child, "timeout" if child.ready else "start")
                self._on_exit(child)

    def _on_message(self, child: _Child, message: tuple) -> bool:
        """Handle one message from ``child``; False if the child is to be stopped."""
        kind = message[0]
        if kind == "ready":
            child.ready = True
            self._start_failures = 0
            return True
        task = child.task
        if task is None or message[1] != task.seq:
            _LOG.warning("decode pool: unexpected message %r from child %d", kind, child.number)
            return True
        now = time.monotonic()
        if kind == "decoded":
            _, _, pairs, height, width = message
            limit = flow_time_limit(pairs, height, width, self._grace, self._flow_rate)
            child.deadline = now + limit
            child.limit_text = (f"{limit:.1f} s for the optical flow of {pairs} pairs of "
                                f"{height}x{width} frames after decoding")
            return True
        child.task = None
        if kind == "ok":
            _, _, meta, described = message
            try:
                result = _from_shared(meta, described)
            except Exception as e:  # noqa: BLE001: the clip's result
                result = e
            self._results.put((task, result, now - child.began))
            return True
        payload = message[2]
        self._results.put((task, self._rebuild_error(task, payload), now - child.began))
        if payload[0] == "oom":
            self._kill(child, "retire")
            return False
        return True

    def _rebuild_error(self, task: _Task, payload: tuple) -> BaseException:
        return rebuild_error(task.uri, self.limits.memory_mb, payload)

    def _kill(self, child: _Child, reason: str) -> None:
        child.killed_for = reason
        try:
            child.process.kill()
        except (OSError, ValueError):
            pass

    def _stop_child(self, child: _Child) -> None:
        if child.process.is_alive():
            try:
                child.conn.send(None)
            except (BrokenPipeError, EOFError, OSError):
                pass
            child.process.join(timeout=2)
        if child.process.is_alive():
            self._kill(child, "close")
            child.process.join(timeout=5)
        self._cleanup(child)

    def _cleanup(self, child: _Child) -> None:
        if child.task is not None:
            for index in range(_MAX_ARRAYS + _DECODE_SEGMENTS):
                _unlink_segment(_segment_name(child.prefix, child.task.seq, index))
        try:
            child.conn.close()
        except OSError:
            pass
        try:
            child.process.close()
        except ValueError:
            pass

    def _on_exit(self, child: _Child) -> None:
        """``child`` has died or is to be replaced: settle its clip, forget it."""
        if child not in self._children:
            return
        self._children.remove(child)
        if child.killed_for is None:
            # Its pipe closed or its sentinel fired: it is dying, give it time to be
            # reaped so that its exit status tells why; stop it if it lingers.
            child.process.join(timeout=5)
            if child.process.is_alive():
                self._kill(child, "retire")
        child.process.join(timeout=10)
        code = child.process.exitcode
        task = child.task
        if not child.ready and child.killed_for != "close":
            self._start_failures += 1
            _LOG.warning("decode pool: child %d died before it was ready (exit %s)",
                         child.number, code)
            if self._start_failures >= _START_FAILURES:
                self._fail_pending(code)
        error = None if task is None else self._death_error(child, task, code)
        self._cleanup(child)  # first: its task's segments are gone when its result is out
        if task is not None:
            self._results.put((task, error, time.monotonic() - child.began))

    def _fail_pending(self, code) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        for task in pending:
            self._results.put((task, DecoderCrashed(
                task.uri, f"no decoding process could be started ({_START_FAILURES} in a row "
                          f"died before they were ready; last exit status {code})"), 0.0))
        self._start_failures = 0

    def _death_error(self, child: _Child, task: _Task, code) -> VideoError:
        uri = task.uri
        if child.killed_for == "timeout":
            return DecodeTimeout(uri, f"the clip was not done within its hard limit of "
                                      f"{child.limit_text}; its decoding process was killed")
        if child.killed_for is not None:  # stopped by us for closing its connection
            return DecoderCrashed(uri, "the decoding process broke off its connection while "
                                       "decoding this clip and was stopped")
        if code is not None and code < 0:
            number = -code
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            if number == signal.SIGKILL:
                return DecodeOutOfMemory(uri, "the decoding process was killed by SIGKILL, "
                                              "which beam-i3d did not send: most likely the "
                                              "kernel's out-of-memory killer")
            what = signal.strsignal(number) or name
            return DecoderCrashed(uri, f"the decoding process died of {name} ({what}) while "
                                       "decoding this clip")
        return DecoderCrashed(uri, f"the decoding process exited (status {code}) while "
                                   "decoding this clip")
