"""An exception raised in a decoding child, on its way to the parent.

The child turns it into plain data for the pipe (:func:`_describe_error`; running out of
memory told apart, :func:`_is_out_of_memory`); the parent rebuilds it
(:func:`rebuild_error`): our own errors as the same class and message, anything else as
a :class:`ChildException` named like the original. What each failure of a child becomes:
:mod:`beam_i3d.media.decode_pool`.
"""

from __future__ import annotations

import traceback

from beam_i3d.errors import BeamI3DError, DecodeOutOfMemory, VideoError, error_classes


class ChildException(Exception):
    """An exception of an unexpected type raised in a decoding child. Each original type
    name gets a subclass of this name (:func:`child_exception`), so that
    ``type(e).__name__`` is the original's; ``type_name``, ``module`` and
    ``child_traceback`` (text) say what it was."""

    type_name = "ChildException"
    module = ""

    def __init__(self, message: str = "", child_traceback: str = ""):
        super().__init__(message)
        self.child_traceback = child_traceback

    def __reduce__(self):
        return child_exception, (self.type_name, str(self), self.child_traceback, self.module)


_CHILD_EXCEPTION_TYPES: dict[tuple[str, str], type] = {}


def child_exception(type_name: str, message: str, child_traceback: str = "",
                    module: str = "") -> ChildException:
    """A :class:`ChildException` whose class is named ``type_name``."""
    cls = _CHILD_EXCEPTION_TYPES.get((module, type_name))
    if cls is None:
        cls = type(type_name, (ChildException,), {"type_name": type_name, "module": module})
        _CHILD_EXCEPTION_TYPES[(module, type_name)] = cls
    return cls(message, child_traceback)


def _is_out_of_memory(error: BaseException) -> bool:
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, MemoryError):
            return True
        if type(error).__name__ == "error" and type(error).__module__ == "cv2":
            text = str(error)
            if "Insufficient memory" in text or "Failed to allocate" in text:
                return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _describe_error(error: BaseException) -> tuple:
    """An exception raised in the child as plain data for the pipe."""
    if _is_out_of_memory(error):
        return ("oom", f"{type(error).__name__}: {error}")
    if isinstance(error, VideoError):
        return ("video", type(error).__name__, error.uri, error.cause)
    if isinstance(error, BeamI3DError):
        return ("ours", type(error).__name__, str(error))
    return ("other", type(error).__module__, type(error).__name__, str(error),
            "".join(traceback.format_exception(error)))


def rebuild_error(uri: str, memory_mb: int, payload: tuple) -> BaseException:
    """The parent's half of :func:`_describe_error`: the exception ``payload`` stands
    for, of the clip at ``uri`` (``memory_mb``: the child's limit, for the message)."""
    kind = payload[0]
    if kind == "oom":
        return DecodeOutOfMemory(uri, f"the decoding process ran out of memory (over its "
                                      f"limit of {memory_mb} MiB): {payload[1]}")
    if kind in ("video", "ours"):
        cls = error_classes().get(payload[1])
        try:
            if kind == "video" and cls is not None and issubclass(cls, VideoError):
                return cls(payload[2], payload[3])
            if kind == "ours" and cls is not None:
                return cls(payload[2])
        except Exception:  # noqa: BLE001: a constructor of another shape
            pass
        message = f"{payload[2]}: {payload[3]}" if kind == "video" else payload[2]
        return child_exception(payload[1], message, "", "beam_i3d.errors")
    _, module, type_name, message, text = payload
    return child_exception(type_name, message, text, module)
