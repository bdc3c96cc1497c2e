"""Test-only fault hook for beam_i3d.media.decode_pool (``BEAM_I3D_TEST_DECODE_HOOK=
decode_faults:inject``): real failures in the decoding child, chosen by a marker in the
file name. Never used outside the tests."""

from __future__ import annotations

import os
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
    if "RAISE" in name:
        raise KeyError("an unexpected failure")
