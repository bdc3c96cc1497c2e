"""The figures of ``beam-i3d report``, computed from Arrow/numpy arrays without I/O.

Both outputs are read in record batches and folded into running counts
(:class:`ScoreCounts`, :class:`ErrorCounts`) so that memory does not grow with the
number of rows; every step is vectorised (pyarrow compute, numpy), never a Python loop
over rows. The counts are then turned into plain, JSON-ready figures
(:meth:`ScoreCounts.summary`, :meth:`ErrorCounts.summary`) by the pure functions below
(:func:`class_table`, :func:`most_confused_pairs`, :func:`most_frequent`, ...).

Definitions:

* a clip *has a label* when its ``label`` is neither null nor empty; only those count
  towards accuracy;
* top-1: ``label == predicted_label``; top-5: ``label`` is among the first five
  ``top_k[].label``; top-5 is unavailable when some clip kept fewer than five entries
  (a run with ``--top-k`` < 5): it is not computed from fewer;
* ground-truth labels outside the run's label map are counted as wrong everywhere (they
  cannot be predicted) and listed in a warning;
* mean per-class accuracy: the mean, over the classes present in the ground truth, of
  each class's top-1 accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOP5 = 5
PROBABILITY_BINS = 20           # equal-width bins over [0, 1] for histogram and calibration
EXAMPLES_PER_ERROR = 3
MOST_CONFUSED = 20
MOST_PREDICTED = 30


# --- Labels as integer codes ---------------------------------------------------------


class Vocabulary:
    """Class names as dense integer codes: the label map's first, then any other name seen.

    Codes ``0 .. len(label_map)-1`` are the label map in its order; names met in the data
    that are not in it get the next codes, in the order seen (sorted within a batch).
    """

    def __init__(self, label_map: Sequence[str] = ()):
        self.names: list[str] = list(dict.fromkeys(label_map))
        self.label_map_size = len(self.names)
        self._value_set = pa.array(self.names, pa.string())

    def __len__(self) -> int:
        return len(self.names)

    @property
    def outside_label_map(self) -> list[str]:
        """Names seen in the data that the label map does not have."""
        return self.names[self.label_map_size:]

    def encode(self, values: pa.Array) -> np.ndarray:
        """int64 codes of a string array (plain or dictionary); -1 where null."""
        if pa.types.is_dictionary(values.type):
            dict_codes = self.encode(values.dictionary)
            indices = values.indices.fill_null(0).to_numpy(zero_copy_only=False)
            codes = dict_codes[indices] if len(dict_codes) else np.full(len(values), -1)
            return np.where(values.is_valid().to_numpy(zero_copy_only=False), codes, -1)
        codes = pc.index_in(values, value_set=self._value_set)
        unseen = pc.and_(pc.is_null(codes), pc.is_valid(values))
        if pc.any(unseen).as_py():
            new = sorted(pc.unique(pc.filter(values, unseen)).to_pylist())
            self.names.extend(new)
            self._value_set = pa.array(self.names, pa.string())
            codes = pc.index_in(values, value_set=self._value_set)
        return codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def blank_to_null(labels: pa.Array) -> pa.Array:
    """Ground-truth labels with empty strings made null (both mean "no label")."""
    if pa.types.is_dictionary(labels.type):
        labels = labels.cast(pa.string())
    return pc.if_else(pc.equal(labels, ""), pa.scalar(None, pa.string()), labels)


# --- Pure per-batch computations -----------------------------------------------------


def top_k_hits(true_codes: np.ndarray, offsets: np.ndarray, flat_codes: np.ndarray,
               k: int = TOP5) -> np.ndarray:
    """Whether each row's true code is among the first ``k`` entries of its list.

    ``offsets`` (n+1) and ``flat_codes`` are a list column's offsets and encoded values;
    every list must hold at least ``k`` entries. Rows with code -1 (no label) are False.
    """
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    first_k = flat_codes[starts[:, None] + np.arange(k)]
    return (first_k == true_codes[:, None]).any(axis=1) & (true_codes >= 0)


def pair_counts(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``shape`` matrix counting the (row, col) pairs; a confusion matrix for codes."""
    flat = np.bincount(rows * shape[1] + cols, minlength=shape[0] * shape[1])
    return flat.reshape(shape)


def probability_bins(probability: np.ndarray, bins: int = PROBABILITY_BINS) -> np.ndarray:
    """The equal-width bin over [0, 1] of each probability (1.0 goes to the last bin)."""
    return np.clip((np.asarray(probability, np.float64) * bins).astype(np.int64), 0, bins - 1)


# --- Pure summaries of the counts ----------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator/denominator, or None when there is nothing to divide by."""
    return float(numerator) / denominator if denominator else None


def class_table(confusion: np.ndarray, top5_hits: np.ndarray | None,
                names: Sequence[str]) -> list[dict]:
    """One row per class present in the ground truth: support, top-1, top-5 and the
    class it is most often mistaken for; worst top-1 first (then by name)."""
    support = confusion.sum(axis=1)
    present = np.flatnonzero(support)
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    rows = []
    for c in present:  # one iteration per class, not per clip
        correct = int(confusion[c, c])
        mistaken = int(off_diagonal[c].argmax()) if off_diagonal[c].any() else None
        rows.append({
            "label": names[c],
            "support": int(support[c]),
            "top1_correct": correct,
            "top1": correct / int(support[c]),
            "top5_correct": None if top5_hits is None else int(top5_hits[c]),
            "top5": None if top5_hits is None else int(top5_hits[c]) / int(support[c]),
            "most_predicted_instead": None if mistaken is None else names[mistaken],
            "most_predicted_instead_count": (0 if mistaken is None
                                             else int(off_diagonal[c, mistaken])),
        })
    rows.sort(key=lambda r: (r["top1"], r["label"]))
    return rows


def most_confused_pairs(confusion: np.ndarray, names: Sequence[str],
                        n: int = MOST_CONFUSED) -> list[dict]:
    """The ``n`` most frequent (true, predicted) pairs with true != predicted.

    Ties are broken by true then predicted name. ``share`` is the pair's count over the
    true class's support.
    """
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    true_idx, pred_idx = np.nonzero(off_diagonal)
    counts = off_diagonal[true_idx, pred_idx]
    rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))  # name -> sort position
    order = np.lexsort((rank[pred_idx], rank[true_idx], -counts))[:n]
    support = confusion.sum(axis=1)
    return [{"true": names[t], "predicted": names[p], "count": int(c),
             "share": int(c) / int(support[t])}
            for t, p, c in zip(true_idx[order], pred_idx[order], counts[order])]


def most_frequent(counts: np.ndarray, names: Sequence[str], n: int) -> list[dict]:
    """The ``n`` names with the highest nonzero counts, ties by name; with their share."""
    total = int(counts.sum())
    nonzero = np.flatnonzero(counts)
    rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))
    order = nonzero[np.lexsort((rank[nonzero], -counts[nonzero]))][:n]
    return [{"label": names[i], "count": int(counts[i]), "share": int(counts[i]) / total}
            for i in order]


def calibration(correct: np.ndarray, wrong: np.ndarray, confidence_sum: np.ndarray) -> dict:
    """Per probability bin: clips, accuracy, mean confidence; and the expected
    calibration error (ECE: bin-size-weighted mean |accuracy - confidence|)."""
    bins = len(correct)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = correct + wrong
    rows, ece = [], 0.0
    for b in range(bins):
        n = int(total[b])
        acc = ratio(correct[b], n)
        conf = ratio(confidence_sum[b], n)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "clips": n,
                     "accuracy": acc, "mean_confidence": conf})
        if n:
            ece += n * abs(acc - conf)
    clips = int(total.sum())
    return {"bins": rows, "ece": ece / clips if clips else None}


def count_stats(value_counts: np.ndarray) -> dict:
    """min, max, mean, median, 5th and 95th percentile of integers given as bincounts."""
    n = int(value_counts.sum())
    if not n:
        return {"count": 0, "min": None, "max": None, "mean": None, "median": None,
                "p5": None, "p95": None}
    values = np.flatnonzero(value_counts)
    cumulative = np.cumsum(value_counts)

    def quantile(q: float) -> int:  # the lower value at rank ceil(q*n)
        return int(np.searchsorted(cumulative, max(1, int(np.ceil(q * n)))))

    return {"count": n, "min": int(values[0]), "max": int(values[-1]),
            "mean": float((np.arange(len(value_counts)) * value_counts).sum() / n),
            "median": quantile(0.5), "p5": quantile(0.05), "p95": quantile(0.95)}


def _grown(array: np.ndarray, size: int, axes: Iterable[int]) -> np.ndarray:
    """``array`` zero-padded to ``size`` along ``axes``."""
    pad = [(0, size - array.shape[a]) if a in set(axes) else (0, 0) for a in range(array.ndim)]
    return np.pad(array, pad) if any(p[1] for p in pad) else array


# --- Running counts over record batches ----------------------------------------------


@dataclass
class ScoreCounts:
    """Running counts over batches of the scores output (see the module doc)."""

    vocabulary: Vocabulary
    clips: int = 0
    labelled: int = 0
    min_top_k: int | None = None
    max_top_k: int | None = None
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    top5_hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # rows: correct, wrong, unlabelled; columns: probability bins
    probability: np.ndarray = field(
        default_factory=lambda: np.zeros((3, PROBABILITY_BINS), np.int64))
    confidence_sum: np.ndarray = field(default_factory=lambda: np.zeros(PROBABILITY_BINS))
    num_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, label: pa.Array, predicted_label: pa.Array, top_k_labels: pa.Array,
            predicted_probability: pa.Array, num_frames: pa.Array) -> None:
        """Fold one batch in. ``top_k_labels`` is the ``top_k`` list column (its structs
        need only the ``label`` field)."""
        n = len(label)
        if not n:
            return
        vocab = self.vocabulary
        true = vocab.encode(blank_to_null(label))
        pred = vocab.encode(predicted_label)
        offsets = top_k_labels.offsets.to_numpy()
        flat = vocab.encode(pc.struct_field(top_k_labels.values, "label"))
        size = len(vocab)
        self.confusion = _grown(self.confusion, size, (0, 1))
        self.top5_hits = _grown(self.top5_hits, size, (0,))
        self.predicted = _grown(self.predicted, size, (0,))

        self.clips += n
        has_label = true >= 0
        self.labelled += int(has_label.sum())
        self.confusion += pair_counts(true[has_label], pred[has_label], (size, size))
        self.predicted += np.bincount(pred, minlength=size)

        lengths = np.diff(offsets)
        low, high = int(lengths.min()), int(lengths.max())
        self.min_top_k = low if self.min_top_k is None else min(self.min_top_k, low)
        self.max_top_k = high if self.max_top_k is None else max(self.max_top_k, high)
        if self.min_top_k >= TOP5:
            hits = top_k_hits(true, offsets, flat)
            self.top5_hits += np.bincount(true[hits], minlength=size)

        prob = pc.fill_null(predicted_probability, 0.0).to_numpy(zero_copy_only=False)
        bins = probability_bins(prob)
        outcome = np.where(has_label, np.where(true == pred, 0, 1), 2)
        self.probability += pair_counts(outcome, bins, self.probability.shape)
        self.confidence_sum += np.bincount(bins[has_label], weights=prob[has_label],
                                           minlength=PROBABILITY_BINS)

        frames = np.clip(num_frames.to_numpy(zero_copy_only=False).astype(np.int64), 0, None)
        counts = np.bincount(frames)
        self.num_frames = _grown(self.num_frames, max(len(counts), len(self.num_frames)), (0,))
        self.num_frames[:len(counts)] += counts

    def summary(self) -> dict:
        """The scores figures as a JSON-ready dict."""
        names = self.vocabulary.names
        confusion = self.confusion
        correct = int(np.trace(confusion)) if confusion.size else 0
        top5_available = self.min_top_k is not None and self.min_top_k >= TOP5
        classes = class_table(confusion, self.top5_hits if top5_available else None, names)
        top5_correct = int(self.top5_hits.sum()) if top5_available else None
        probability_edges = np.linspace(0.0, 1.0, PROBABILITY_BINS + 1).tolist()
        if not self.clips:
            top5_note = "no clips were scored"
        elif top5_available:
            top5_note = None
        else:
            top5_note = (f"unavailable: the run kept only the top {self.min_top_k} "
                         f"predictions for some clips")
        outside = set(self.vocabulary.outside_label_map)
        support = confusion.sum(axis=1) if confusion.size else np.zeros(0)
        unknown_labels = [{"label": names[c], "clips": int(support[c])}
                          for c in range(self.vocabulary.label_map_size, len(names))
                          if c < len(support) and support[c]]
        unknown_predictions = sorted(
            names[c] for c in np.flatnonzero(self.predicted) if names[c] in outside)
        return {
            "clips": self.clips,
            "labelled": self.labelled,
            "unlabelled": self.clips - self.labelled,
            "top_k_entries": {"min": self.min_top_k, "max": self.max_top_k},
            "accuracy": {
                "top1": ratio(correct, self.labelled),
                "top1_correct": correct,
                "top5": ratio(top5_correct, self.labelled) if top5_available else None,
                "top5_correct": top5_correct,
                "top5_note": top5_note,
                "mean_per_class_top1": (float(np.mean([c["top1"] for c in classes]))
                                        if classes else None),
                "mean_per_class_top5": (float(np.mean([c["top5"] for c in classes]))
                                        if classes and top5_available else None),
                "classes_in_ground_truth": len(classes),
            },
            "labels_outside_label_map": unknown_labels if self.vocabulary.label_map_size else [],
            "predictions_outside_label_map": (unknown_predictions
                                              if self.vocabulary.label_map_size else []),
            "per_class": classes,
            "most_confused": most_confused_pairs(confusion, names) if confusion.size else [],
            "most_predicted": most_frequent(self.predicted, names, MOST_PREDICTED),
            "distinct_predicted_classes": int(np.count_nonzero(self.predicted)),
            "top1_probability": {
                "edges": probability_edges,
                "correct": self.probability[0].tolist(),
                "wrong": self.probability[1].tolist(),
                "unlabelled": self.probability[2].tolist(),
                "median_bin": _median_bin(self.probability.sum(axis=0), probability_edges),
            },
            "calibration": calibration(self.probability[0], self.probability[1],
                                       self.confidence_sum),
            "num_frames": {**count_stats(self.num_frames),
                           "values": np.flatnonzero(self.num_frames).tolist(),
                           "counts": self.num_frames[self.num_frames > 0].tolist()},
        }


def _median_bin(counts: np.ndarray, edges: Sequence[float]) -> list[float] | None:
    """The [low, high) probability bin that holds the median clip."""
    n = int(counts.sum())
    if not n:
        return None
    b = int(np.searchsorted(np.cumsum(counts), (n + 1) // 2))
    return [edges[b], edges[b + 1]]


@dataclass
class ErrorCounts:
    """Running counts over batches of the errors output: rows by (stage, error_type),
    with the first few messages of each as examples."""

    failures: int = 0
    by_type: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[dict]] = field(default_factory=dict)

    def add(self, stage: pa.Array, error_type: pa.Array, message: pa.Array,
            clip_id: pa.Array) -> None:
        """Fold one batch in."""
        if not len(stage):
            return
        self.failures += len(stage)
        table = pa.table({"stage": stage.cast(pa.string()).fill_null("(none)"),
                          "error_type": error_type.cast(pa.string()).fill_null("(none)"),
                          "message": message.cast(pa.string()),
                          "clip_id": clip_id.cast(pa.string())})
        groups = table.group_by(["stage", "error_type"]).aggregate([([], "count_all")])
        for s, e, n in zip(groups["stage"].to_pylist(), groups["error_type"].to_pylist(),
                           groups["count_all"].to_pylist()):  # one iteration per group
            key = (s, e)
            self.by_type[key] = self.by_type.get(key, 0) + n
            have = self.examples.setdefault(key, [])
            if len(have) < EXAMPLES_PER_ERROR:
                mask = pc.and_(pc.equal(table["stage"], s), pc.equal(table["error_type"], e))
                rows = table.filter(mask).slice(0, EXAMPLES_PER_ERROR - len(have))
                have.extend({"clip_id": c, "message": m} for c, m in
                            zip(rows["clip_id"].to_pylist(), rows["message"].to_pylist()))

    def summary(self) -> dict:
        """The failure figures as a JSON-ready dict, most frequent first."""
        by_stage: dict[str, int] = {}
        for (s, _), n in self.by_type.items():
            by_stage[s] = by_stage.get(s, 0) + n
        ordered = sorted(self.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "failures": self.failures,
            "by_stage": dict(sorted(by_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_error_type": [{"stage": s, "error_type": e, "count": n,
                               "examples": self.examples.get((s, e), [])}
                              for (s, e), n in ordered],
        }
