"""The DoFn shape of every step that hands its elements to a decode pool: the clips of
``score``, the probes and work items of ``score --window``, the frame counts and clips
of ``fvd``. Anything that opens untrusted media goes through one of these, so that a file
that crashes or hangs FFmpeg costs its own element, never the worker
(:class:`beam_i3d.media.decode_pool.DecodePool`).
"""

from __future__ import annotations

import apache_beam as beam


class PoolDoFn(beam.DoFn):
    """Hands each element to a :class:`~beam_i3d.media.decode_pool.DecodePool` and emits
    the outputs of whatever has finished.

    ``process`` submits (subclasses call :meth:`submit` with a function that queues the
    element's task under the key it is given), then emits every finished result, and
    waits only while more than twice ``processes`` tasks are in flight, so that every
    child has one queued while this process runs the model; ``finish_bundle`` emits the
    rest. Subclasses define :meth:`outputs`. Each output keeps its element's timestamp
    and window. ``options``: anything with ``limits`` (DecodeLimits) and
    ``decode_processes`` (children per DoFn instance; None: one per CPU).
    """

    ERRORS = "errors"

    def __init__(self, options):
        self._limits = options.limits
        self._processes = options.decode_processes
        self._pool = None

    def setup(self):
        import os

        from beam_i3d.media.decode_pool import DecodePool

        processes = self._processes or os.cpu_count() or 1
        self._pool = DecodePool(processes, self._limits)
        self._max_in_flight = 2 * processes
        self._waiting = {}  # key -> (element, timestamp, window)
        self._next_key = 0

    def submit(self, element, timestamp, window, queue):
        """Queue ``element`` (``queue(key)`` submits its task to ``self._pool``); yields the
        outputs of what has finished. A task refused with ValueError / TypeError (bad
        arguments) is that element's result."""
        key = self._next_key
        self._next_key += 1
        self._waiting[key] = (element, timestamp, window)
        try:
            queue(key)
        except (ValueError, TypeError) as e:
            yield from self._emit(key, e, 0.0)
        for finished in self._pool.ready():
            yield from self._emit(*finished)
        while self._pool.in_flight() > self._max_in_flight:
            yield from self._emit(*self._pool.next_result())

    def finish_bundle(self):
        for finished in self._pool.results():
            yield from self._emit(*finished)

    def teardown(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _emit(self, key, result, seconds: float):
        from apache_beam.utils.windowed_value import WindowedValue

        element, timestamp, window = self._waiting.pop(key)
        for output in self.outputs(element, result, seconds):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, WindowedValue(
                    output.value, timestamp, [window]))
            else:
                yield WindowedValue(output, timestamp, [window])

    def outputs(self, element, result, seconds: float):
        """The outputs of one element: ``result`` is its task's result or the exception
        (see :class:`~beam_i3d.media.decode_pool.Finished`); ``seconds`` its time in the
        pool. Yield plain values for the main output, TaggedOutput for the others."""
        raise NotImplementedError
