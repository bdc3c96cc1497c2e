"""Small file helpers over Beam's FileSystems, so every path may be local or a URI.

Beam's FileSystems read and write local paths, gs:// and the other schemes Beam
supports; using them everywhere (instead of TensorFlow's gfile, say) gives one I/O path
that the tests exercise against the GCS emulator (STORAGE_EMULATOR_HOST).
"""

from __future__ import annotations

import os
import shutil


def is_local(path: str) -> bool:
    """True for plain paths and file:// URIs."""
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    """A local path or file:// URI as a plain path."""
    return path[len("file://"):] if path.startswith("file://") else path


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
