"""Regenerate beam_i3d/data/samples/v_CricketShot_g04_c01.mp4 from the release's GIF.

The kinetics-i3d release shows its sample clip (UCF101 v_CricketShot_g04_c01, already
sampled at 25 fps, resized and centre-cropped to 224x224) as
``data/v_CricketShot_g04_c01_rgb.gif``, 79 frames; a copy is in tests/data/. This turns
it into a small H.264 MP4 at 25 fps, a real video file to run the whole recipe on.

    python scripts/make_sample_video.py [--gif GIF] [--out MP4] [--crf 20]
"""

from __future__ import annotations

import argparse
import os
from fractions import Fraction

import av

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIF = os.path.join(ROOT, "tests", "data", "v_CricketShot_g04_c01_rgb.gif")
DEFAULT_OUT = os.path.join(ROOT, "beam_i3d", "data", "samples", "v_CricketShot_g04_c01.mp4")


def convert(gif: str, out: str, crf: int = 20) -> int:
    """Encode every frame of ``gif`` as H.264 (yuv420p, 25 fps, moov atom first); returns
    the number of frames."""
    with av.open(gif) as source:
        stream_in = source.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in source.decode(stream_in)]
    height, width = frames[0].shape[:2]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with av.open(out, "w", options={"movflags": "+faststart"}) as target:
        stream = target.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One thread: the same bytes on every run.
        stream.options = {"crf": str(crf), "preset": "slow", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                target.mux(packet)
        for packet in stream.encode():
            target.mux(packet)
    return len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gif", default=DEFAULT_GIF)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--crf", type=int, default=20)
    args = parser.parse_args()
    count = convert(args.gif, args.out, args.crf)
    print(f"{args.out}: {count} frames, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
