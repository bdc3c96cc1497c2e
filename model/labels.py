"""Kinetics class names, shipped in the package and chosen by class count."""

from __future__ import annotations

import functools
from importlib import resources

# Label maps from DeepMind's kinetics-i3d release (Apache-2.0), one class name a line,
# in the order of the Logits layer.
LABEL_MAP_FILES = {400: "label_map_400.txt", 600: "label_map_600.txt"}


@functools.lru_cache(maxsize=None)
def label_map(num_classes: int) -> tuple[str, ...]:
    """Class names for a network with ``num_classes`` outputs (400 or 600)."""
    try:
        filename = LABEL_MAP_FILES[num_classes]
    except KeyError:
        raise ValueError(
            f"no label map for {num_classes} classes; known: "
            + ", ".join(f"{n} (Kinetics-{n})" for n in LABEL_MAP_FILES)) from None
    text = resources.files("model").joinpath("data", filename).read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == num_classes, (filename, len(names))
    return names


def label_map_name(num_classes: int) -> str:
    """A short name of the label map, recorded in output metadata (e.g. ``kinetics-400``)."""
    label_map(num_classes)
    return f"kinetics-{num_classes}"
