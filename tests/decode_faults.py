"""Test-only fault hook for beam_i3d.media.decode_pool (``BEAM_I3D_TEST_DECODE_HOOK=
decode_faults:inject``): real failures in the decoding child, chosen by a marker in the
file name. Never used outside the tests."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import time


def inject(uri: str) -> None:
    """Called by the child before it decodes ``uri``."""
    name = os.path.basename(uri)
    if "ABORT" in name:
        os.abort()  # SIGABRT, as a failed assertion in FFmpeg would
    if "SEGV" in name:
        import ctypes

        ctypes.string_at(0)  # a real invalid read: SIGSEGV
    if "HANG" in name:
        while True:  # a read that never returns
            time.sleep(3600)
    if "HOG" in name:
        import numpy as np

        hoard = []
        while True:  # allocate without bound (address space: the RLIMIT_AS stops it)
            hoard.append(np.empty(256 << 20, np.uint8))
    if "KILLED" in name:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    if "EXIT" in name:
        os._exit(3)
    if "NOTHREAD" in name:
        starve_threads()
    if "RAISE" in name:
        raise KeyError("an unexpected failure")


def starve_threads() -> None:
    """From now on no thread can start in this process, as on a machine out of tasks
    or memory, while the process itself goes on: every new thread's default stack is
    made 1 GiB (glibc's ``pthread_setattr_default_np``; FFmpeg starts its threads with
    the default attributes) and the address-space limit leaves 256 MiB above what is
    mapped now, so ``pthread_create`` fails with EAGAIN (no room for the stack)."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(256)  # a pthread_attr_t (56 bytes on x86-64)
    assert libc.pthread_attr_init(attr) == 0
    try:
        assert libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(1 << 30)) == 0
        assert libc.pthread_setattr_default_np(attr) == 0
    finally:
        libc.pthread_attr_destroy(attr)
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) << 10 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (256 << 20), hard))


def decode_without_threads(uri: str, thread_limit: int | None) -> dict:
    """Run in a process of its own (it is starved for good): what each way of decoding
    ``uri`` gives once no thread can start (:func:`starve_threads`), by name: its result
    or the exception it raised. ``thread_limit``: given to
    :func:`beam_i3d.media.video_open.limit_decode_threads` first, as the decode pool's
    children do (None: not called; decode_clip asks for 2 threads, fvd's readers for
    FFmpeg's choice)."""
    import cv2  # noqa: F401: imported before the starving, as in a pool's child

    from beam_i3d.fvd.clips import _count_video_frames, _read_video
    from beam_i3d.media.video import decode_clip, probe_extent

    if thread_limit is not None:
        from beam_i3d.media.video_open import limit_decode_threads

        limit_decode_threads(thread_limit)
    starve_threads()
    calls = {
        "decode_clip": lambda: decode_clip(uri, decode_threads=2).rgb,
        "probe_extent": lambda: probe_extent(uri),
        "fvd_count": lambda: _count_video_frames(uri),
        "fvd_read": lambda: _read_video(uri, 4),
    }
    found = {}
    for name, call in calls.items():
        try:
            found[name] = call()
        except Exception as e:  # noqa: BLE001: what the test looks at
            found[name] = e
    return found
