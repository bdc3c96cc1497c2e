"""A decode pool's arrays through shared memory (``/dev/shm``), both halves.

The child writes each array of its result into a segment of its own
(:class:`_SegmentAllocator`: a clip's frames, as they are decoded; :func:`_to_shared`:
any other array), named ``<prefix>_<task>_<index>`` (:func:`_segment_name`), and sends
names, shapes and dtypes; the parent maps each one (:func:`_from_shared`, no copy) and
unlinks its name at once. The design, and who removes what a dead child leaves:
:mod:`beam_i3d.media.decode_pool`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

_SHM_DIR = "/dev/shm"
_MAX_ARRAYS = 4  # shared-memory segments one result may use
_DECODE_SEGMENTS = 8  # segments a child's decode may write frames into, per clip


def _segment_name(prefix: str, seq: int, index: int) -> str:
    return f"{prefix}_{seq}_{index}"


def _unlink_segment(name: str) -> None:
    import _posixshmem

    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


class _SegmentAllocator:
    """A child's ``allocate(shape, dtype)`` for :func:`beam_i3d.media.video.decode_clip`:
    each array in a fresh shared-memory segment (named as :func:`_to_shared` names
    them, from index ``_MAX_ARRAYS`` on), so that the decoded frames are written once,
    where the parent maps them, instead of being copied there (which held them twice).
    Beyond ``_DECODE_SEGMENTS`` arrays (retried seeks) they come from the heap.
    :meth:`release` unlinks the segments not handed to the parent."""

    def __init__(self, prefix: str, seq: int):
        self._prefix, self._seq = prefix, seq
        self._made: list = []  # (name, the whole array over its segment)

    def __call__(self, shape, dtype):
        import mmap

        import numpy as np

        dtype = np.dtype(dtype)
        if len(self._made) >= _DECODE_SEGMENTS:
            return np.empty(shape, dtype)
        count = int(np.prod(shape, dtype=np.int64))
        size = max(1, count * dtype.itemsize)
        name = _segment_name(self._prefix, self._seq, _MAX_ARRAYS + len(self._made))
        fd = os.open(os.path.join(_SHM_DIR, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mapped = mmap.mmap(fd, size)  # pages are taken as frames are written
        except BaseException:
            _unlink_segment(name)
            raise
        finally:
            os.close(fd)
        array = np.frombuffer(mapped, dtype, count=count).reshape(shape)
        self._made.append((name, array))
        return array

    def segment_of(self, array) -> str | None:
        """The segment ``array`` fills from its start (C-contiguous), if one of ours."""
        address = array.__array_interface__["data"][0]
        for name, whole in self._made:
            if (array.size and array.flags.c_contiguous and array.dtype == whole.dtype
                    and address == whole.__array_interface__["data"][0]):
                return name
        return None

    def release(self, kept=()) -> None:
        """Unlink every segment but those in ``kept`` (the parent maps and unlinks them)."""
        for name, _ in self._made:
            if name not in kept:
                _unlink_segment(name)
        self._made.clear()


def _to_shared(value, fields: Sequence[str], prefix: str, seq: int,
               allocator: _SegmentAllocator | None = None):
    """``value`` (a dataclass) with the arrays of ``fields`` moved into shared-memory
    segments: ``(value without them, [(field, name, shape, dtype str)])``. An array that
    already fills one of ``allocator``'s segments is sent as it is (not copied); the
    allocator's other segments are unlinked."""
    import numpy as np
    from multiprocessing import resource_tracker, shared_memory

    described, created, kept = [], [], []
    try:
        for index, field in enumerate(fields):
            array = getattr(value, field)
            if array is None:
                continue
            name = allocator.segment_of(array) if allocator is not None else None
            if name is not None:
                kept.append(name)
                described.append((field, name, tuple(array.shape), array.dtype.str))
                continue
            name = _segment_name(prefix, seq, index)
            segment = shared_memory.SharedMemory(name=name, create=True, size=max(1, array.nbytes))
            created.append(name)
            # The parent unlinks it: the child's resource tracker must not (Python 3.11
            # registers every segment a process creates, and would warn and unlink).
            resource_tracker.unregister(segment._name, "shared_memory")  # noqa: SLF001
            view = np.ndarray(array.shape, array.dtype, buffer=segment.buf)
            view[...] = array
            del view
            segment.close()
            described.append((field, name, tuple(array.shape), array.dtype.str))
    except BaseException:
        for name in created + kept:
            _unlink_segment(name)
        kept = []
        raise
    finally:
        if allocator is not None:
            allocator.release(kept)
    return dataclasses.replace(value, **{field: None for field in fields}), described


def _map_segment(name: str, shape, dtype: str):
    """The array a child left in segment ``name``, mapped into this process, not copied;
    the name is unlinked at once, so the memory is freed when the array (its last view)
    is. ``/dev/shm/<name>`` is the segment :mod:`multiprocessing.shared_memory` made."""
    import mmap

    import numpy as np

    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    fd = os.open(os.path.join(_SHM_DIR, name), os.O_RDWR)
    try:
        mapped = mmap.mmap(fd, max(1, count * dtype.itemsize))  # shared, read-write
    finally:
        os.close(fd)
        _unlink_segment(name)
    return np.frombuffer(mapped, dtype, count=count).reshape(shape)


def _from_shared(meta, described):
    """The parent's half of :func:`_to_shared`: map each array (no copy: the item's
    frames are held once, in the segment the child wrote) and unlink its segment."""
    if not described:
        return meta
    arrays = {}
    try:
        for field, name, shape, dtype in described:
            arrays[field] = _map_segment(name, shape, dtype)
    finally:
        for _, name, _, _ in described:
            _unlink_segment(name)  # those not reached after a failure
    return dataclasses.replace(meta, **arrays)
