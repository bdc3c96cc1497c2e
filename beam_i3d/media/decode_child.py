"""What runs in a decode pool's child process: :func:`_child_main`, the children's entry
point (started by module path, ``spawn`` or ``forkserver``), and the tasks it runs: a
clip's decode and, where the child does it, its finish (:func:`_decode_in_child`), a
windowed item's flow (:func:`_flow_windows`), a function of
:meth:`~beam_i3d.media.decode_pool.DecodePool.submit_call` (:func:`_call_in_child`).
It imports neither TensorFlow nor the pool's module. The design and the parent's side:
:mod:`beam_i3d.media.decode_pool`.

Test-only fault hook: if the environment variable ``BEAM_I3D_TEST_DECODE_HOOK`` is
``module:function`` when a child starts, the child imports it and calls ``function(uri)``
before decoding each clip (the tests use it to abort, hang or exhaust memory on chosen
files). Not for production use.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

from beam_i3d.media.child_errors import _describe_error, _is_out_of_memory
from beam_i3d.media.shared_arrays import _SegmentAllocator, _to_shared

HOOK_ENV = "BEAM_I3D_TEST_DECODE_HOOK"  # test-only fault hook, see the module doc


@dataclasses.dataclass
class _FlowedSpan:
    """A windowed item as a child sends it when it also computes the windows' flow (the
    ``opencv`` backend): the span's RGB crops, and the span's flow fields (each pair a
    window needs computed once, :func:`beam_i3d.media.preprocess.span_flow`), from which
    the parent slices each window's (``per_window``: each window's flow stream computed
    on its own frames, one after another along time, as before flow was shared)."""

    span: Any  # the DecodedClip of the span, without its arrays
    rgb: Any  # the span's crops, [T,224,224,3] uint8 (five or ten crops: whole resized frames, [T,H,W,3])
    flow: Any  # the span's fields [T-1,...] (per_window: the windows' streams concatenated)
    flow_lengths: list  # per_window: per window the length of its flow stream (0: none)
    errors: list  # per window: None, or the error of its flow as _describe_error gives it
    per_window: bool = False


def _load_hook():
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return None
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _decode_in_child(conn, seq, uri, start_sec, end_sec, options, limits, finish_here,
                     prefix):
    """A clip's decode (and finish, where the child does it): ``(meta, described)`` of
    :func:`_to_shared`. The frames are decoded straight into shared memory."""
    from beam_i3d.media.preprocess import decode_for_streams, finish_clip

    streams = options["streams"]
    allocator = _SegmentAllocator(prefix, seq)
    try:
        clip = decode_for_streams(uri, start_sec, end_sec, streams=streams,
                                  max_seconds=options["max_seconds"], limits=limits,
                                  decode_threads=1, allocate=allocator,
                                  fps=options.get("fps"), max_frames=options.get("max_frames"),
                                  crops=options["crops"])
        if not finish_here and options.get("flow_in_child"):
            return _to_shared(_flow_windows(conn, seq, clip, options, allocator),
                              ("rgb", "flow"), prefix, seq, allocator)
        if not finish_here:
            return _to_shared(clip, ("rgb", "gray"), prefix, seq, allocator)
        if "flow" in streams:
            conn.send(("decoded", seq, clip.num_frames - 1) + tuple(clip.gray.shape[1:3]))
        value = finish_clip(clip, streams=streams, quantize_flow=options["quantize_flow"],
                            flow_backend=options["flow_backend"],
                            flow_batch_pairs=options["flow_batch_pairs"],
                            crops=options["crops"])
        del clip  # its gray frames' segment, if any, is unlinked below
        return _to_shared(value, ("rgb", "flow"), prefix, seq, allocator)
    finally:
        allocator.release()  # what _to_shared did not reach (a failure)


def _flow_windows(conn, seq, span, options, allocator) -> _FlowedSpan:
    """The flow of a decoded item's windows: the span's fields, each pair the windows
    need computed once, written into an array of the allocator's (the parent's hard
    limit first moved to cover those pairs); one run's failure is the error of the
    windows that need it. Running out of memory fails the whole item (the child is
    replaced). ``options["flow_per_window"]``: :func:`_flow_each_window` instead."""
    from beam_i3d.job.windows import pair_runs, window_offsets
    from beam_i3d.media.preprocess import span_flow

    if options.get("flow_per_window"):
        return _flow_each_window(conn, seq, span, options, allocator)
    offsets = window_offsets(span, options["windows"])
    runs = pair_runs(offsets)
    pairs = sum(b - a - 1 for a, b in runs)
    conn.send(("decoded", seq, pairs) + tuple(span.gray.shape[1:3]))
    fields = span_flow(span.gray, [], quantize_flow=options["quantize_flow"],
                       allocate=allocator,
                       crops=options["crops"])  # zeros, in shared memory
    failed = []  # (run, error)
    for run in runs:
        try:
            span_flow(span.gray, [run], quantize_flow=options["quantize_flow"],
                      flow_backend=options["flow_backend"],
                      flow_batch_pairs=options["flow_batch_pairs"], out=fields,
                      crops=options["crops"])
        except Exception as e:  # noqa: BLE001: the result of the windows of this run
            if _is_out_of_memory(e):
                raise
            failed.append((run, _describe_error(e)))
    errors = []
    for where in offsets:
        error = None
        if not isinstance(where, BaseException):
            first, count = where
            error = next((e for (a, b), e in failed if a <= first and first + count <= b), None)
        errors.append(error)
    return _FlowedSpan(span=dataclasses.replace(span, rgb=None, gray=None), rgb=span.rgb,
                       flow=fields, flow_lengths=[], errors=errors)


def _flow_each_window(conn, seq, span, options, allocator) -> _FlowedSpan:
    """The flow of each window of a decoded item computed on that window's frames alone
    (each pair as many times as windows share it: the way before flow was shared, kept
    for ``benchmarks/features_speed.py``), concatenated in one array of the allocator's."""
    from beam_i3d.job.windows import cut_windows
    from beam_i3d.media.preprocess import clip_flow

    parts = cut_windows(span, options["windows"])
    clips = [p for p in parts if not isinstance(p, BaseException)]
    pairs = sum(max(1, c.num_frames - 1) for c in clips)
    conn.send(("decoded", seq, pairs) + tuple(span.gray.shape[1:3]))
    flows, errors = [], []
    for part in parts:
        flow, error = None, None
        if not isinstance(part, BaseException):
            try:
                flow = clip_flow(part, quantize_flow=options["quantize_flow"],
                                 flow_backend=options["flow_backend"],
                                 flow_batch_pairs=options["flow_batch_pairs"],
                                 loop_to=options.get("loop_to") or 0,
                                 crops=options["crops"])
            except Exception as e:  # noqa: BLE001: that window's result
                if _is_out_of_memory(e):
                    raise
                error = _describe_error(e)
        flows.append(flow)
        errors.append(error)
    lengths = [0 if f is None else len(f) for f in flows]
    done = [f for f in flows if f is not None]
    joined = None
    if done:
        joined = allocator((sum(len(f) for f in done),) + done[0].shape[1:], done[0].dtype)
        offset = 0
        for f in done:
            joined[offset:offset + len(f)] = f
            offset += len(f)
    del parts, clips, flows, done
    return _FlowedSpan(span=dataclasses.replace(span, rgb=None, gray=None), rgb=span.rgb,
                       flow=joined, flow_lengths=lengths, errors=errors, per_window=True)


def _call_in_child(call, uri, limits, prefix, seq):
    """A :meth:`DecodePool.submit_call` task: ``function(uri, limits, *args)``, its
    ``arrays`` fields moved to shared memory: ``(meta, described)``."""
    function, args, arrays = call
    value = function(uri, limits, *args)
    return _to_shared(value, arrays, prefix, seq) if arrays else (value, [])


def _child_main(conn, prefix: str, memory_mb: int) -> None:
    """A decoding child: set its limits, say it is ready, then decode the clips it is
    sent until it is sent None or the parent goes away."""
    import resource

    limit = int(memory_mb) << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

    import cv2

    import beam_i3d.media.preprocess  # noqa: F401: imported once, before the first clip
    from beam_i3d.media.video_open import limit_decode_threads

    cv2.setNumThreads(1)
    limit_decode_threads(1)
    hook = _load_hook()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        seq, uri, start_sec, end_sec, options, limits, finish_here = task
        try:
            if hook is not None:
                hook(uri)
            if "call" in options:
                meta, described = _call_in_child(options["call"], uri, limits, prefix, seq)
            else:
                meta, described = _decode_in_child(conn, seq, uri, start_sec, end_sec, options,
                                                   limits, finish_here, prefix)
            reply = ("ok", seq, meta, described)
        except BaseException as e:  # noqa: BLE001: every failure goes back to the parent
            reply = ("error", seq, _describe_error(e))
        try:
            conn.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return
        if reply[0] == "error" and reply[2][0] == "oom":
            return  # a fresh child for the next clip
