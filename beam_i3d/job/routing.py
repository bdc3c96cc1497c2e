"""From manifest files to one decision per row: the requests to score, and the errors.

    manifest files -> parse rows (ParseManifestFile) --\
    the output's settled keys, resuming (DoneKeys) ----+-> group by identity (CoGroupByKey;
                                                           GroupByKey of the rows alone
                                                           when not resuming)
      -> SettleEachKey: the first row of an identity goes on as a ClipRequest (or, a bad
         row, is reported); each repeat is a DuplicateClip error; a settled key is skipped

:class:`ReadClipRequests` is the composite both ``score`` and ``fvd`` start with. Every
row keeps the ``row_key`` it is settled under (:mod:`beam_i3d.job.row_keys`), which
:mod:`beam_i3d.job.verify` recomputes on one machine to check that nothing was lost.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from beam_i3d import fileio as bfileio
from beam_i3d.errors import DuplicateClip, ManifestError, is_transient
from beam_i3d.job.manifest import ManifestOptions
from beam_i3d.job.progress import NAMESPACE
from beam_i3d.job.records import error_record
from beam_i3d.job.row_keys import assign_keys, identities_of_key, keyed_rows

if TYPE_CHECKING:
    from beam_i3d.job.score_options import ScoreOptions


class ParseManifestFile(beam.DoFn):
    """A matched manifest file -> ``(identity, KeyedRow)`` for each of its rows (see
    :mod:`beam_i3d.job.row_keys`); a file that cannot be read at all -> one error row
    (``errors`` output)."""

    ERRORS = "errors"

    def __init__(self, options: ManifestOptions):
        self._options = options
        self._rows = Metrics.counter(NAMESPACE, "manifest_rows")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        try:
            rows = list(keyed_rows(path, readable.read(), self._options))
        except Exception as e:  # an unreadable manifest file: one error, the job goes on
            # (the launcher checks every manifest before the job starts; this is for
            # files that change or vanish in between)
            self._rows.inc()
            error = e if isinstance(e, ManifestError) else ManifestError(
                f"{path}: cannot read manifest: {type(e).__name__}: {e}")
            yield beam.pvalue.TaggedOutput(self.ERRORS, error_record(
                "manifest", error, source=path, row_key=f"manifest-file:{path}"))
            return
        for row in rows:
            self._rows.inc()
            yield row.identity, row


def done_keys_in_parquet(readable: fileio.ReadableFile, retry_errors: bool = False
                         ) -> Iterable[tuple[str, str]]:
    """``(identity, row_key)`` for each row an earlier output file settled, under every
    identity that key may belong to (:func:`row_keys.identities_of_key`). With
    ``retry_errors``, errors that may succeed on a retry (``errors.is_transient``) are
    not settled. Only the key columns are read."""
    from beam_i3d.job.results import read_key_columns

    for key, error_type, stage in read_key_columns(readable.metadata.path, readable.open):
        if retry_errors and error_type is not None and is_transient(error_type, stage):
            continue
        for identity in identities_of_key(key):
            yield identity, key


class DoneKeys(beam.PTransform):
    """What the output already holds (for --skip-existing), read inside the pipeline so
    that a Kinetics-size list never travels in the job graph."""

    def __init__(self, output: str, retry_errors: bool):
        super().__init__()
        self._output = output
        self._retry_errors = retry_errors

    def expand(self, pbegin):
        patterns = [bfileio.join(self._output, d, "*.parquet")
                    for d in ("scores", "windows", "errors")]
        return (pbegin
                | "OutputPatterns" >> beam.Create(patterns)
                | "MatchOutput" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                | "ReadOutput" >> fileio.ReadMatches()
                | "DoneKeys" >> beam.FlatMap(done_keys_in_parquet, self._retry_errors))


class SettleEachKey(beam.DoFn):
    """One decision per manifest row, after grouping the rows of one identity with the
    keys an earlier run settled.

    The first row (by manifest file and line) gets the identity as its ``row_key`` and
    goes on (a ClipRequest) or is reported (a bad row); each repeat gets its own key
    and a DuplicateClip error. A row whose key is already settled is skipped
    (--skip-existing).
    """

    ERRORS = "errors"

    def __init__(self):
        self._skipped = Metrics.counter(NAMESPACE, "rows_skipped_existing")
        self._repeats = Metrics.counter(NAMESPACE, "clips_repeated")

    def process(self, element):
        identity, grouped = element
        if isinstance(grouped, dict):  # resuming: CoGroupByKey's rows and settled keys
            rows, done = grouped["rows"], set(grouped["done"])
        else:  # a fresh run: GroupByKey's rows alone
            rows, done = grouped, ()
        keyed = assign_keys(identity, list(rows), order=lambda r: r.order)
        first = keyed[0][1] if keyed else None
        for key, row in keyed:
            if key in done:
                self._skipped.inc()
                continue
            if row is not first:
                self._repeats.inc()
                yield beam.pvalue.TaggedOutput(self.ERRORS, error_record(
                    "manifest", DuplicateClip(repeat_message(identity, row, first)),
                    row.request.clip_id if row.request else _bad_row_clip_id(row),
                    row.request.video_uri if row.request else _bad_row_uri(row),
                    row.source, key))
            elif row.request is not None:
                yield dataclasses.replace(row.request, row_key=key)
            else:
                yield beam.pvalue.TaggedOutput(self.ERRORS, error_record(
                    "manifest", row.error, _bad_row_clip_id(row), _bad_row_uri(row),
                    row.source, key))


def repeat_message(identity: str, row, first) -> str:
    """The DuplicateClip message of ``row``, a repeat of ``first`` (KeyedRows): the
    first row is kept whatever its outcome (scored, failed, or a bad row reported), and
    a repeat that names another video or time range says so."""
    message = (f"{row.source}: clip {identity!r} repeats {first.source}, the row kept for "
               f"it whatever its outcome" + (" (a bad row, reported)" if first.request is None
                                            else "")
               + "; this repeat is not scored")
    uri = row.request.video_uri if row.request else _bad_row_uri(row)
    first_uri = first.request.video_uri if first.request else _bad_row_uri(first)
    if uri is not None and first_uri is not None and uri != first_uri:
        message += f"; it names another video: {uri} (the kept row: {first_uri})"
    if row.request and first.request:
        span = (row.request.start_sec, row.request.end_sec)
        first_span = (first.request.start_sec, first.request.end_sec)
        if span != first_span:
            message += (f"; it asks for another time range: {_span(*span)} (the kept "
                        f"row: {_span(*first_span)})")
    return message


def _span(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "the whole video"
    return f"{start or 0:g} s to " + ("the end" if end is None else f"{end:g} s")


def _bad_row_clip_id(row) -> str | None:
    return None if row.identity.startswith("manifest-row:") else row.identity


def _bad_row_uri(row) -> str | None:
    from beam_i3d.job.manifest import URI_COLUMNS

    uri = next((row.row.get(c) for c in URI_COLUMNS if row.row.get(c) not in (None, "")), None)
    return str(uri) if isinstance(uri, (str, int, float)) and not isinstance(uri, bool) else None


class ReadClipRequests(beam.PTransform):
    """Manifest glob -> keyed, unique ClipRequests, manifest errors, and (resuming) the
    keys the output settles already (DoneKeys' output; None otherwise)."""

    def __init__(self, options: "ScoreOptions"):
        super().__init__()
        self._options = options

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "MatchManifests" >> fileio.MatchFiles(self._options.manifest)
            | "ReadManifests" >> fileio.ReadMatches()
            | "ParseRows" >> beam.ParDo(ParseManifestFile(self._options.manifest_options))
            .with_outputs(ParseManifestFile.ERRORS, main="rows"))
        done = None
        if self._options.skip_existing:
            done = pbegin | "Existing" >> DoneKeys(self._options.output,
                                                   self._options.retry_errors)
            grouped = {"rows": parsed.rows, "done": done} | "GroupByKey" >> beam.CoGroupByKey()
        else:  # nothing settled to join: a plain GroupByKey spares two steps a row
            grouped = parsed.rows | "GroupByKey" >> beam.GroupByKey()
        settled = grouped | "Settle" >> beam.ParDo(SettleEachKey()).with_outputs(
            SettleEachKey.ERRORS, main="requests")
        errors = ((parsed.errors, settled.errors)
                  | "ManifestErrors" >> beam.Flatten())
        return settled.requests, errors, done
