"""Small file helpers over Beam's FileSystems, so every path may be local or a URI.

Beam's FileSystems read and write local paths, gs:// and the other schemes Beam
supports; using them everywhere (instead of TensorFlow's gfile, say) gives one I/O path
that the tests exercise against the GCS emulator (STORAGE_EMULATOR_HOST).
"""

from __future__ import annotations

import os
import re
import shutil

# "scheme://..." as Beam's FileSystems recognise it.
_SCHEME = re.compile(r"^\s*(?P<scheme>[a-zA-Z][-a-zA-Z0-9+.]*)://")


def uri_scheme(path: str) -> str | None:
    """The scheme of a ``scheme://...`` URI, in lower case; None for a plain path."""
    match = _SCHEME.match(path)
    return match["scheme"].lower() if match else None


def is_local(path: str) -> bool:
    """True for plain paths and file: URIs (``file:///abs``, ``file:/abs``,
    ``file://localhost/abs``)."""
    scheme = uri_scheme(path)
    return scheme is None or scheme == "file"


def local_path(path: str) -> str:
    """A local path or file: URI as a plain path: ``file:///a/b``, ``file:/a/b`` and
    ``file://localhost/a/b`` are ``/a/b`` (no percent-decoding)."""
    if path[:5].lower() != "file:":
        return path
    rest = path[5:]
    if rest.startswith("//"):
        rest = rest[2:]
        if rest.lower().startswith("localhost/"):
            rest = rest[len("localhost"):]
        return rest
    return rest if rest.startswith("/") else path


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


def upload_tree(local_dir: str, dest: str) -> None:
    """Copy a local directory tree to ``dest`` (local path or URI), file by file."""
    if is_local(dest):
        shutil.copytree(local_dir, local_path(dest), dirs_exist_ok=True)
        return
    from apache_beam.io.filesystems import FileSystems

    for root, _, files in os.walk(local_dir):
        for name in files:
            src = os.path.join(root, name)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            with open(src, "rb") as f_in, FileSystems.create(FileSystems.join(dest, rel)) as f_out:
                shutil.copyfileobj(f_in, f_out, 8 << 20)


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
