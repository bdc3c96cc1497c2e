"""The network's input contract: what a clip must be for I3D to take it.

Plain numbers, no TensorFlow: decoding and preprocessing (beam_i3d.media.recipe takes
them from here) read them without loading the network.
"""

from __future__ import annotations

CROP_SIZE = 224  # pixels, side of the centre crop (the network's input size)
STREAMS = ("rgb", "flow")  # I3D's two streams, in the order their outputs are listed
# The shortest clip the network accepts (three temporal stride-2 stages, then a 2-step
# average pool). model/i3d.py takes it (and CROP_SIZE as its input size) from here.
MIN_FRAMES = 9
STREAM_CHANNELS = {"rgb": 3, "flow": 2}  # channels of each stream's frames (RGB; flow x, y)
