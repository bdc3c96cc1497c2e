"""Where a run writes: checks of the output location, made before any work.

* :func:`check_output_location` (cheap, no network): refuses an empty location (an
  unset ``$OUTPUT`` in a script), the root of a file system or of a bucket
  (``/``, ``gs://bucket``: a run writes ``scores/`` and ``errors/`` directories into
  its output, and a bucket's root is shared by everything in it), a scheme no Beam
  filesystem reads, and, for local outputs, an existing file or a directory that
  cannot be created or written.
* :func:`probe_remote_output`: for a remote output, that no object has the output's own
  name (it would be a file, not a directory) and that the credentials at hand may
  create and delete an object under it: a tiny probe object is written and deleted
  (Beam's file sinks write temporary files and delete them, so a run needs both).

Failures raise :class:`~beam_i3d.errors.OutputError` (exit status 3) with one line.
"""

from __future__ import annotations

import os
import tempfile
import uuid

from beam_i3d import fileio
from beam_i3d.errors import OutputError

PROBE_PREFIX = ".beam-i3d-write-probe-"


def check_output_location(output: str, option: str = "--output") -> str:
    """Check ``output`` (a local path, file:// or a URI such as gs://bucket/path) and
    return it without trailing slashes; raises OutputError. Reads nothing remote."""
    if output is None or not output.strip():
        raise OutputError(f"{option} is empty (an unset variable in a script?); name the "
                          "directory to write to")
    if output != output.strip():
        raise OutputError(f"{option} {output!r} starts or ends with white space")
    if fileio.is_local(output):
        return _check_local(output, option)
    return _check_remote(output, option)


def _check_local(output: str, option: str) -> str:
    path = fileio.local_path(output)
    if not path:
        raise OutputError(f"{option} {output} names no directory")
    absolute = os.path.abspath(path)
    if os.path.dirname(absolute) == absolute:
        raise OutputError(f"{option} {output} is the root of the file system; name a "
                          "directory for this run")
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise OutputError(f"{option} {output} is an existing file, not a directory")
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"{option} {output} cannot be created: {existing} is a file")
    try:
        # What the run does first: make a directory there (removed at once).
        tempfile.TemporaryDirectory(prefix=PROBE_PREFIX, dir=existing).cleanup()
    except OSError as e:
        what = "written" if existing == absolute else "created"
        raise OutputError(f"{option} {output} cannot be {what}: {e.strerror or e} "
                          f"({existing})") from None
    return output.rstrip("/") or output


def _check_remote(output: str, option: str) -> str:
    scheme, _, rest = output.partition("://")
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise OutputError(f"{option} {output} names no bucket")
    if not path.strip("/"):
        raise OutputError(f"{option} {output} is the root of bucket {scheme}://{bucket}; "
                          f"name a directory in it, e.g. {scheme}://{bucket}/runs/NAME")
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(output)
    except ValueError:
        raise OutputError(f"{option} {output}: no filesystem reads {scheme}:// (use a local "
                          "path, file:// or gs://)") from None
    return output.rstrip("/")


def probe_remote_output(output: str, option: str = "--output") -> None:
    """That a remote ``output`` is not an existing object and that an object can be
    created and deleted under it; raises OutputError (unusable) or lets the storage
    client's exception through (for the caller to describe: credentials, network)."""
    from apache_beam.io.filesystems import FileSystems

    for metadata in FileSystems.match([output])[0].metadata_list:
        if metadata.path.rstrip("/") == output.rstrip("/"):
            raise OutputError(f"{option} {output} is an existing object (a file), not a "
                              "directory")
    probe = FileSystems.join(output, PROBE_PREFIX + uuid.uuid4().hex[:12])
    with FileSystems.create(probe, mime_type="application/octet-stream") as f:
        f.write(b"beam-i3d checks that it may write here; delete me\n")
    FileSystems.delete([probe])
