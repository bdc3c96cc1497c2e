"""Which manifest row an output row settles: ``row_key``, stable across reruns.

Every manifest row ends in exactly one output row, and that row names it by its
``row_key``. Resuming (``--skip-existing``), ``verify`` and the read recipe match rows
by this key, so it must not depend on where the manifest lies (a relative or an
absolute path, a copy in a bucket) or on the row's position (a row inserted above).

* A row's **identity** is its clip: the ``clip_id`` it gives, else the one derived from
  its video URI and times (:func:`beam_i3d.job.manifest.derive_clip_id`). A row that cannot
  be parsed into a clip is identified by its ``clip_id`` column if it has one, else by
  its content: ``manifest-row:`` and 16 hex digits of the sha256 of the row's fields.
* Rows of one identity are ordered by (manifest file, line); the first one's key is the
  identity itself, the k-th repeat's ``<identity>#repeat<k>`` (k = 1, 2, ...). Repeats
  are reported as DuplicateClip errors under their own keys, so they count too.

This module is pure (no Beam): the pipeline keys rows with it in parallel, and
:mod:`beam_i3d.job.verify` recomputes the keys from the manifest on one machine.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
from typing import Any, Iterable, Mapping, Sequence, TypeVar

REPEAT_SUFFIX = "#repeat"
_REPEAT = re.compile(r"^(?P<identity>.*)#repeat(?P<k>[1-9][0-9]*)$", re.DOTALL)

T = TypeVar("T")


def content_identity(row: Mapping[str, Any]) -> str:
    """The identity of an unparseable row without a clip_id: a hash of its fields."""
    canonical = json.dumps({str(k): v for k, v in row.items()}, sort_keys=True, default=str,
                           ensure_ascii=False)
    return "manifest-row:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def bad_row_identity(row: Mapping[str, Any]) -> str:
    """The identity of a row that could not become a clip (see module doc)."""
    clip_id = row.get("clip_id")
    if _is_text(clip_id) and str(clip_id).strip():
        return str(clip_id).strip()
    return content_identity(row)  # also for a clip_id that is not text (an object, a list)


def _is_text(value: Any) -> bool:
    """A manifest text column's value: text or a number (as parse_row reads them)."""
    return isinstance(value, (str, numbers.Number)) and not isinstance(value, bool)


def row_key(identity: str, repeat: int) -> str:
    """The key of the ``repeat``-th row (0: the first) of one identity."""
    return identity if repeat == 0 else f"{identity}{REPEAT_SUFFIX}{repeat}"


def identities_of_key(key: str) -> tuple[str, ...]:
    """The identities whose rows may carry ``key``: the key itself and, for a key of
    the repeat form, the identity it repeats (a clip_id may end like a repeat key)."""
    match = _REPEAT.match(key)
    return (key, match.group("identity")) if match else (key,)


def assign_keys(identity: str, items: Sequence[T], order) -> list[tuple[str, T]]:
    """``(row_key, item)`` for the rows of one identity, first (by ``order(item)``)
    first; the first gets the identity, the repeats ``#repeat<k>``."""
    ranked: Sequence[T] = items if len(items) == 1 else sorted(items, key=order)
    return [(row_key(identity, k), item) for k, item in enumerate(ranked)]


class KeyedRow:
    """One manifest row, parsed, with its identity and its place for ordering repeats.

    ``request`` is the clip (None for a bad row); ``error`` the ManifestError of a bad
    row (None for a good one); ``source`` is ``file:line``.
    """

    __slots__ = ("identity", "order", "source", "request", "error", "row")

    def __init__(self, identity, order, source, request=None, error=None, row=None):
        self.identity = identity
        self.order = order
        self.source = source
        self.request = request
        self.error = error
        self.row = row


def keyed_rows(path: str, data: bytes, options) -> Iterable[KeyedRow]:
    """The rows of one manifest file (its bytes) with their identities.

    ``options`` is a :class:`beam_i3d.job.manifest.ManifestOptions`. Raises ManifestError
    (or what the format's reader raises) for a file that cannot be read at all.
    """
    from beam_i3d.errors import ManifestError
    from beam_i3d.job.manifest import parse_row, read_rows

    for number, row in read_rows(path, data):
        source = f"{path}:{number}"
        order = (path, number)
        try:
            request = parse_row(row, source, options, order=order)
        except ManifestError as e:
            yield KeyedRow(bad_row_identity(row), order, source,
                           error=ManifestError(f"{source}: {e}"), row=row)
        else:
            yield KeyedRow(request.clip_id, order, source, request=request)
