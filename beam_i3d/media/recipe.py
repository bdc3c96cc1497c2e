"""The preprocessing recipe of the kinetics-i3d release, and the limits on untrusted input.

One place for each number. The recipe (kinetics-i3d README, "Sample data and
preprocessing", plus the flow quantisation its authors described in kinetics-i3d issue
#24):

* both streams: frames sampled at 25 fps, clipped to the annotation's [start, end);
* RGB: resize (bilinear) so that the shorter side is 256, centre crop 224x224,
  values rescaled to [-1, 1];
* flow: grayscale of the resized frames, TV-L1 between consecutive frames, truncated
  to [-20, 20] pixels, quantised to 256 levels by the linear map [-20, 20] -> [0, 255],
  rescaled to [-1, 1], the same centre crop.

This module imports nothing heavy, so that the pipeline, the CLI and the tests can read
the numbers without pulling in TensorFlow or PyAV.
"""

from __future__ import annotations

import dataclasses

from model import inputs as _network

# The network's input contract, defined in model/inputs.py.
CROP_SIZE = _network.CROP_SIZE
STREAMS = _network.STREAMS
MIN_FRAMES = _network.MIN_FRAMES

SAMPLE_FPS = 25  # frames per second of both streams
RESIZE_SHORT_SIDE = 256  # pixels, the shorter side after resizing
FLOW_BOUND = 20.0  # pixels per frame; flow is truncated to [-FLOW_BOUND, FLOW_BOUND]
FLOW_LEVELS = 256  # quantisation levels of the flow ([-20, 20] -> {0, ..., 255})
DEFAULT_MAX_SECONDS = 10.0  # longest clip scored by default (a Kinetics clip: 250 frames)

# Limits on untrusted input (see DecodeLimits).
DEFAULT_MAX_PIXELS = 4096 * 4096  # width x height of the coded frame
DEFAULT_MAX_DURATION_SECONDS = 3 * 3600.0  # longest source video accepted
DEFAULT_DECODE_TIMEOUT_SECONDS = 60.0  # wall-clock budget to read and decode one clip
# Widest displayed aspect ratio (long side / short side) accepted: at the recipe's
# 256-pixel short side a frame is at most 256 x 1024, which bounds the cost and memory
# of the resize and of the full-frame optical flow (32:9 super-ultrawide is 3.56).
DEFAULT_MAX_ASPECT_RATIO = 4.0
DEFAULT_DECODE_MEMORY_MB = 4096  # address-space limit of a decoding child process


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What a clip may cost before it is refused.

    ``max_pixels``: largest coded frame (width * height) accepted; checked from the
    stream header before decoding (VideoTooLarge) and enforced by the decoder for every
    frame. ``max_duration_seconds``: longest source video (VideoTooLong), checked from the
    container's declared duration and again while decoding. ``decode_timeout_seconds``:
    wall-clock budget for opening, reading and decoding one clip (DecodeTimeout); it does
    not cover the optical flow, whose cost is fixed by the clip's length and size.
    ``max_aspect_ratio``: widest displayed long side / short side accepted
    (UnsupportedShape), which bounds the resized frame and so the flow's cost.
    ``memory_mb``: address-space limit of a child process that decodes clips
    (DecodeOutOfMemory; see :mod:`beam_i3d.media.decode_pool`).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_duration_seconds: float = DEFAULT_MAX_DURATION_SECONDS
    decode_timeout_seconds: float = DEFAULT_DECODE_TIMEOUT_SECONDS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    memory_mb: int = DEFAULT_DECODE_MEMORY_MB

    def __post_init__(self):
        if (self.max_pixels <= 0 or self.max_duration_seconds <= 0
                or self.decode_timeout_seconds <= 0 or self.max_aspect_ratio < 1
                or self.memory_mb <= 0):
            raise ValueError(f"decode limits must be positive (aspect ratio >= 1): {self}")
