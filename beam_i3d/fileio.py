"""Small file helpers over Beam's FileSystems, so every path may be local or a URI.

Beam's FileSystems read and write local paths, gs:// and the other schemes Beam
supports; using them everywhere (instead of TensorFlow's gfile, say) gives one I/O path
that the tests exercise against the GCS emulator (STORAGE_EMULATOR_HOST).
"""

from __future__ import annotations

import os

from model import storage as _storage

# Defined in model/storage.py (the network's weights are read, and its SavedModel written,
# through them without beam_i3d).
uri_scheme = _storage.uri_scheme
is_local = _storage.is_local
local_path = _storage.local_path
upload_tree = _storage.upload_tree


def readable_schemes() -> list[str]:
    """The URI schemes Beam's FileSystems have registered (gs, s3, hdfs...): those are
    read through FileSystems; local paths and file: URIs are read directly."""
    from apache_beam.io.filesystem import FileSystem
    from apache_beam.io.filesystems import FileSystems  # noqa: F401 (registers them)

    return sorted({scheme for fs in FileSystem.get_all_subclasses() if (scheme := fs.scheme())})


def join(base: str, *parts: str) -> str:
    """Join path parts with the separator of ``base``'s filesystem."""
    if is_local(base):
        return os.path.join(local_path(base), *parts)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(base, *parts)


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Write ``data`` at ``path`` (local or a URI) whole or not at all: locally through a
    temporary file renamed into place (parent directories made); on object stores an
    object appears only once its upload completes."""
    if is_local(path):
        import uuid

        local = local_path(path)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = f"{local}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.create(path, mime_type=mime_type,
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
