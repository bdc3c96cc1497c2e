"""Checks made by ``beam-i3d score`` at launch, before any work, of what would otherwise
fail every row or fail late: the manifests' formats and text, their columns (a video
URI column, or the columns ``--video-template`` names), and whether the storage the
manifest points at (and the output) can be reached with the credentials at hand.

Each failure is a :class:`~beam_i3d.errors.ConfigurationError` (exit status 3) with a
one-line message naming the file or bucket.

Cost, for a glob of thousands of manifests: every matched name is checked for a known
format (names only, from the one listing); the contents are read only from the first
:data:`HEAD_FILES` files, at most :data:`HEAD_BYTES` of each (so at most 4 MiB in all):
enough to catch a manifest of the wrong encoding, since such globs are nearly always
files of one kind. Storage probes take the distinct buckets of the first
:data:`SAMPLE_ROWS` rows and look one object up in each, all at once, under one deadline
(:func:`storage_timeout`).
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
from typing import Callable, Iterable

from beam_i3d import fileio
from beam_i3d.errors import ConfigurationError, OutputError, StorageUnreachable

HEAD_FILES = 16          # manifests whose contents are checked (the first, sorted)
HEAD_BYTES = 256 << 10   # bytes read from the head of each of those
SAMPLE_ROWS = 100        # rows whose video URIs name the buckets probed
TIMEOUT_ENV = "BEAM_I3D_STORAGE_CHECK_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 20.0


def storage_timeout() -> float:
    """Seconds all storage probes of a launch may take together: $BEAM_I3D_STORAGE_CHECK_
    TIMEOUT, default 20."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise ConfigurationError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}")
    return value if value > 0 else DEFAULT_TIMEOUT_SECONDS


# --- Running probes under a deadline -------------------------------------------------


def run_with_deadline(probes: dict[str, Callable[[], object]], timeout: float
                      ) -> dict[str, tuple[object, BaseException | None]]:
    """Run each probe in its own daemon thread, all at once; wait at most ``timeout``
    seconds in all. Returns name -> (result, exception); a probe still running at the
    deadline gets a TimeoutError (its thread is left to finish on its own: storage
    clients retry for minutes and cannot be interrupted)."""
    import time

    outcome: dict[str, tuple[object, BaseException | None]] = {}

    def target(name, probe):
        try:
            outcome[name] = (probe(), None)
        except BaseException as e:  # noqa: BLE001 (described to the user, not lost)
            outcome[name] = (None, e)

    threads = []
    for name, probe in probes.items():
        t = threading.Thread(target=target, args=(name, probe), daemon=True,
                             name=f"beam-i3d-probe {name}")
        t.start()
        threads.append((name, t))
    deadline = time.monotonic() + timeout
    for name, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for name, t in threads:
        if name not in outcome:
            outcome[name] = (None, TimeoutError(f"no answer within {timeout:g} s"))
    return outcome


def describe_storage_error(error: BaseException) -> str:
    """A short cause for a failed storage call: no credentials, permission denied,
    cannot connect, no such bucket; else the exception's first line."""
    seen = []
    pending = [error]
    while pending and len(seen) < 20:
        e = pending.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        details = getattr(e, "exception_details", None)  # Beam's BeamIOError
        if isinstance(details, dict):
            pending.extend(v for v in details.values() if isinstance(v, BaseException))
        pending.extend([e.__cause__, e.__context__])
    for e in seen:
        name = type(e).__name__
        code = getattr(e, "code", None) or getattr(e, "status_code", None)
        if isinstance(e, TimeoutError) and str(e).startswith("no answer"):
            return f"cannot connect: {e} (network, firewall or proxy?)"
        if name in ("DefaultCredentialsError", "RefreshError", "TransportError") or (
                "credentials" in str(e).lower() and "could not" in str(e).lower()):
            return f"no usable credentials ({_first_line(e)})"
        if name == "Forbidden" or code == 403:
            return f"permission denied ({_first_line(e)})"
        if name == "Unauthorized" or code == 401:
            return f"credentials refused ({_first_line(e)})"
        if name == "NotFound" or code == 404:
            return f"no such bucket ({_first_line(e)})"
        if isinstance(e, ConnectionError) or name in ("ConnectionError", "NewConnectionError",
                                                        "MaxRetryError"):
            return f"cannot connect ({_first_line(e)})"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def bucket_of(uri: str) -> str | None:
    """``scheme://bucket`` of a remote URI; None for local paths and file://."""
    if fileio.is_local(uri):
        return None
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


# --- Manifests -----------------------------------------------------------------------


def match_manifests(pattern: str, timeout: float | None = None) -> list[str]:
    """The files ``--manifest`` matches, sorted (remote globs under the storage deadline);
    raises ConfigurationError when none, StorageUnreachable when the listing fails."""
    from apache_beam.io.filesystems import FileSystems

    def listing():
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)

    if fileio.is_local(pattern):
        paths = listing()
    else:
        timeout = storage_timeout() if timeout is None else timeout
        paths, error = run_with_deadline({"manifest": listing}, timeout)["manifest"]
        if error is not None:
            raise StorageUnreachable(f"cannot list --manifest {pattern} in {bucket_of(pattern)}: "
                                     f"{describe_storage_error(error)}")
    if not paths:
        raise ConfigurationError(f"--manifest {pattern} matches no file")
    return paths


def check_manifest_files(paths: list[str]) -> dict[str, bytes | None]:
    """Every path must name a known format; the heads of the first HEAD_FILES must be
    UTF-8 text (CSV, JSON Lines) or start as Parquet does. Returns the heads read, by
    path (None for Parquet), for :func:`sample_rows`; raises ConfigurationError naming
    the file."""
    from beam_i3d.errors import ManifestError
    from beam_i3d.job.manifest import manifest_format

    for path in paths:
        try:
            manifest_format(path)
        except ManifestError as e:
            raise ConfigurationError(str(e)) from None
    heads = {}
    for path in paths[:HEAD_FILES]:
        head, whole = _read_head(path, HEAD_BYTES)
        fmt = manifest_format(path)
        if fmt == "parquet":
            if head[:4] != b"PAR1":
                raise ConfigurationError(f"{path}: not a Parquet file (it does not start "
                                         "with PAR1)")
            heads[path] = None  # sampled through pyarrow (footer and first row group)
            continue
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
        except UnicodeDecodeError as e:
            raise ConfigurationError(
                f"{path}: not UTF-8 text (byte {e.start} is {head[e.start:e.start + 1]!r}); "
                f"save the {fmt.upper()} manifest as UTF-8") from None
        heads[path] = head if whole else head[:head.rfind(b"\n") + 1]
    return heads


def _read_head(path: str, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from the start of ``path``, and whether that is all of it."""
    from apache_beam.io.filesystems import FileSystems

    if fileio.is_local(path):
        with open(fileio.local_path(path), "rb") as f:
            data = f.read(limit + 1)
    else:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            data = f.read(limit + 1)
    return data[:limit], len(data) <= limit


def _parquet_head_rows(path: str, limit: int):
    """The first ``limit`` rows of a Parquet file (its footer and first row group)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    if fileio.is_local(path):
        f = open(fileio.local_path(path), "rb")
    else:
        f = FileSystems.open(path, compression_type="uncompressed")
    with f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=limit):
            return list(enumerate(batch.to_pylist(), start=1))
    return []


def sample_rows(heads: dict[str, bytes | None], manifest_options, limit: int = SAMPLE_ROWS
                ) -> list[tuple[str, str]]:
    """(video URI, source) of the first ``limit`` rows that parse, from the manifests'
    heads (text) or first row groups (Parquet, where the head is None). The first
    ``limit`` rows of each head must have the columns the URI comes from
    (:func:`check_columns`), else ConfigurationError."""
    import itertools

    from beam_i3d.errors import ManifestError
    from beam_i3d.job.manifest import parse_row, read_rows

    found = []
    for path, head in heads.items():
        try:
            rows = list(itertools.islice(_parquet_head_rows(path, limit) if head is None
                                         else read_rows(path, head), limit))
        except Exception:  # noqa: BLE001 (a malformed file is reported at run time)
            continue
        check_columns(path, [row for _, row in rows], manifest_options)
        for number, row in rows:
            if len(found) >= limit:
                break
            try:
                request = parse_row(row, f"{path}:{number}", manifest_options)
            except ManifestError:
                continue  # an error row at run time, not a launch failure
            except Exception:  # noqa: BLE001 (reported at run time)
                continue
            found.append((request.video_uri, request.source))
    return found


def template_columns(template: str) -> list[str]:
    """The columns a ``--video-template`` names (``{split}``, ``{t:06d}``, ``{a.b}`` ->
    split, t, a); positional fields are left out (the rows' errors name them)."""
    import re
    import string

    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return []  # a malformed template: each row's error says why
    for _, field, _, _ in parsed:
        if field:
            name = re.match(r"[^.\[]*", field).group(0)
            if name and not name.isdigit() and name not in names:
                names.append(name)
    return names


def check_columns(path: str, rows: list[dict], manifest_options) -> None:
    """Refuse a manifest whose sampled rows all lack the column(s) the video URI comes
    from: one of ``video_uri``, ``path``, ``video``, or with ``--video-template``
    every column it names. Each row would fail with the same error; ConfigurationError
    naming the file and the columns it has. Rows without columns (none sampled, bad
    JSON lines) decide nothing."""
    from beam_i3d.job.manifest import URI_COLUMNS

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(k for k in row if k is not None and k != "__error__"))
    if not columns:
        return
    have = ", ".join(list(columns)[:20]) + (" ..." if len(columns) > 20 else "")
    template = manifest_options.video_template
    if template:
        absent = [c for c in template_columns(template) if c not in columns]
        if absent:
            raise ConfigurationError(
                f"{path}: --video-template names column(s) {', '.join(absent)}, which the "
                f"manifest lacks; its columns: {have}")
    elif not any(c in columns for c in URI_COLUMNS):
        raise ConfigurationError(
            f"{path}: no video URI column (video_uri, or path, video) and no "
            f"--video-template; the manifest's columns: {have}")


# --- Storage -------------------------------------------------------------------------


def check_storage(samples: Iterable[tuple[str, str]], output: str | None,
                  timeout: float | None = None) -> None:
    """Probe each distinct bucket of the sampled videos (a look-up of one of its objects)
    and, when ``output`` is remote, that it may be written (:func:`beam_i3d.job.outputs.
    probe_remote_output`), all under one deadline; raises StorageUnreachable (or
    OutputError) with one line naming the bucket and the cause."""
    from apache_beam.io.filesystems import FileSystems

    from beam_i3d.job.outputs import probe_remote_output

    first_uri = {}
    for uri, source in samples:
        bucket = bucket_of(uri)
        if bucket and bucket not in first_uri:
            first_uri[bucket] = (uri, source)
    probes: dict[str, Callable[[], object]] = {
        bucket: (lambda u=uri: FileSystems.match([u])) for bucket, (uri, _) in first_uri.items()}
    if output is not None and not fileio.is_local(output):
        probes["output"] = lambda: probe_remote_output(output)
    if not probes:
        return
    gcs = any(b.startswith("gs://") for b in first_uri) or (
        output is not None and output.startswith("gs://"))
    if gcs:
        # Missing credentials do not fail Beam's calls (it retries, then goes on
        # anonymously: public buckets work), so look them up too, to name the cause.
        probes["credentials"] = _google_credentials
    timeout = storage_timeout() if timeout is None else timeout
    logger = logging.getLogger("apache_beam.utils.retry")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its retry warnings, tracebacks included: ours say it
    try:
        outcome = run_with_deadline(probes, timeout)
    finally:
        logger.setLevel(level)
    no_credentials = outcome.get("credentials", (None, None))[1]
    if isinstance(no_credentials, TimeoutError):
        no_credentials = None  # still looking (a metadata server?): say nothing of it
    for name in probes:
        _, error = outcome[name]
        if error is None or name == "credentials":
            continue
        if isinstance(error, OutputError):
            raise error
        cause = describe_storage_error(error)
        if no_credentials is not None:
            cause = f"{describe_storage_error(no_credentials)}; {cause}"
        if name == "output":
            raise StorageUnreachable(f"cannot write --output {output} in "
                                     f"{bucket_of(output)}: {cause}")
        uri, source = first_uri[name]
        raise StorageUnreachable(f"cannot read the videos' storage {name} (tried {uri}, "
                                 f"from {source}): {cause}")



def _google_credentials():
    import google.auth

    return google.auth.default()[0]
