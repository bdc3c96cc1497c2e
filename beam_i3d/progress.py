"""Running the pipeline and reading its counters."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "beam_i3d"


def counters(result) -> dict[str, int]:
    """The committed (or, where the runner has none, attempted) beam_i3d counters."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    out = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + (value or 0)
    return out


def run_with_progress(pipeline: beam.Pipeline, quiet: bool = False) -> dict[str, int]:
    """Run ``pipeline`` to the end; return its beam_i3d counters."""
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result)
