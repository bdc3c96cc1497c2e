"""Where the model's files are: local paths, file: URIs, or URIs of any scheme Beam's
FileSystems read and write (gs://...).

Checkpoints are read (model.weights) and SavedModels written (model.export) through these,
without beam_i3d; :mod:`beam_i3d.fileio` takes them back beside its other helpers, so the
whole project tells a local path from a URI in one way.
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
