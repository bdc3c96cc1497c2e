"""One model per GPU on a machine with several: which GPU a loading process takes.

Beam loads each model copy (``--model-copies N``) in a process of its own (its
``multi_process_shared`` servers), and, without ``--model-copies``, one model in each
worker process; neither tells the loader which copy it is. So the loading process
claims a GPU itself: the lowest-numbered one whose lock file
(``<tmp>/beam-i3d-gpu-<k>.lock``) it can lock, with ``flock``. The lock is held for the
process's life and released by the kernel when it ends, however it ends, so a crashed
copy frees its GPU for the next. With more loading processes than GPUs, the rest share
them round-robin (by process id). With ``--model-copies`` equal to the number of GPUs,
every GPU holds one model and the worker processes decode on the CPUs.

Pure of TensorFlow: the caller passes the devices it sees (tests pass made-up ones).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from typing import Sequence

_LOG = logging.getLogger(__name__)
_HELD: dict[str, int] = {}  # lock path -> open descriptor, kept for the process's life


def lock_path(index: int, lock_dir: str | None = None) -> str:
    return os.path.join(lock_dir or tempfile.gettempdir(), f"beam-i3d-gpu-{index}.lock")


def claim_device(devices: Sequence[str], lock_dir: str | None = None) -> str | None:
    """The device this process should load its model on: None for none or one device
    (TensorFlow's default placement), else the first of ``devices`` no other living
    process holds, or, all held, ``devices[pid % len(devices)]``. Idempotent within a
    process."""
    if len(devices) < 2:
        return None
    for index, device in enumerate(devices):
        path = lock_path(index, lock_dir)
        if path in _HELD:
            return device
    for index, device in enumerate(devices):
        path = lock_path(index, lock_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[path] = fd
        _LOG.info("model placed on %s (of %d devices)", device, len(devices))
        return device
    device = devices[os.getpid() % len(devices)]
    _LOG.warning("more models than the %d devices: this one shares %s", len(devices), device)
    return device


def release_devices() -> None:
    """Give up this process's claims (tests; a process's end does it anyway)."""
    while _HELD:
        _, fd = _HELD.popitem()
        os.close(fd)
