"""DecodeLimits (beam_i3d.media.recipe): the defaults, the smallest accepted value of each
limit, and the refusal of each limit at zero or below (aspect ratio: below 1), one
field at a time, with the exact message."""

from __future__ import annotations

import pytest

from beam_i3d.media.recipe import DecodeLimits


def test_defaults():
    assert DecodeLimits() == DecodeLimits(max_pixels=4096 * 4096, max_duration_seconds=10800.0,
                                          decode_timeout_seconds=60.0, max_aspect_ratio=4.0,
                                          memory_mb=4096)


def test_smallest_accepted_values():
    # 1 pixel, 1 MB and a square aspect ratio are allowed (not sensible, but positive);
    # so are fractions of a second.
    DecodeLimits(max_pixels=1, max_duration_seconds=0.5, decode_timeout_seconds=0.5,
                 max_aspect_ratio=1.0, memory_mb=1)
    DecodeLimits(max_duration_seconds=1, decode_timeout_seconds=1, max_aspect_ratio=1.5)


@pytest.mark.parametrize("field, value, shown", [
    ("max_pixels", 0, "max_pixels=0"), ("max_pixels", -1, "max_pixels=-1"),
    ("max_duration_seconds", 0, "max_duration_seconds=0"),
    ("max_duration_seconds", -0.5, "max_duration_seconds=-0.5"),
    ("decode_timeout_seconds", 0, "decode_timeout_seconds=0"),
    ("decode_timeout_seconds", -1.0, "decode_timeout_seconds=-1.0"),
    ("max_aspect_ratio", 0.999, "max_aspect_ratio=0.999"),
    ("max_aspect_ratio", 0, "max_aspect_ratio=0"),
    ("memory_mb", 0, "memory_mb=0"), ("memory_mb", -4096, "memory_mb=-4096"),
])
def test_each_limit_refused_alone(field, value, shown):
    defaults = ["max_pixels=16777216", "max_duration_seconds=10800.0",
                "decode_timeout_seconds=60.0", "max_aspect_ratio=4.0", "memory_mb=4096"]
    fields = [shown if d.startswith(field + "=") else d for d in defaults]
    with pytest.raises(ValueError) as e:
        DecodeLimits(**{field: value})
    assert str(e.value) == ("decode limits must be positive (aspect ratio >= 1): "
                            f"DecodeLimits({', '.join(fields)})")
