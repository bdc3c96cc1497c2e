"""A scores row's top-k, predicted label and probabilities against its own logits, for
Hypothesis-drawn logits (ties included: equal logits rank by class index)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_i3d.job.inference import ClipExample
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.job.records import score_record
from model.labels import label_map

LABELS = label_map(400)
REQUEST = ClipRequest("c", "/v/c.mp4", None, None, None, "m.csv:2", row_key="c")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def with_ties(draw_values, pairs) -> np.ndarray:
    v = np.array(draw_values, np.float32)
    for i, j in pairs:  # copy some logits onto others: ties anywhere in the ranking
        v[i] = v[j]
    return v


logit_vectors = st.builds(
    with_ties,
    st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=400, max_size=400),
    st.lists(st.tuples(st.integers(0, 399), st.integers(0, 399)), max_size=40))


@settings(max_examples=60, deadline=None)
@given(logits=logit_vectors, top_k=st.integers(1, 20))
def test_top_k_follows_the_logits(logits, top_k):
    probabilities = softmax(logits.astype(np.float64)).astype(np.float32)
    example = ClipExample(request=REQUEST, num_frames=12)
    row = score_record(example, {"logits": logits, "probabilities": probabilities},
                       LABELS, top_k, embeddings=False)
    expected = sorted(range(400), key=lambda i: (-float(logits[i]), i))[:top_k]
    assert [t["index"] for t in row["top_k"]] == expected
    assert [t["label"] for t in row["top_k"]] == [LABELS[i] for i in expected]
    for t in row["top_k"]:
        assert t["logit"] == float(logits[t["index"]])
        assert t["probability"] == float(probabilities[t["index"]])
    assert row["predicted_index"] == expected[0]
    assert row["predicted_label"] == LABELS[expected[0]]
    assert row["predicted_probability"] == float(probabilities[expected[0]])
    assert row["logits"] == logits.tolist() and row["num_frames"] == 12
