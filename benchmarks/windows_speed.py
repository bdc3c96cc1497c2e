"""Windowed decoding of a long video against the same windows as separate clips.

Makes a long 720p H.264 video by looping real content (the bundled cricket sample,
upscaled), then decodes its ``--window``/``--stride`` windows through the decode pool
two ways and prints windows/s and the peak memory of the decoding children:

* windowed: work items of ``--windows-per-item`` windows, each decoded once (one seek)
  and cut into windows, as ``score --window`` does;
* clips: one task per window (a seek and a decode per window), as a manifest of the
  same windows as separate clips would be.

Only decoding and preprocessing are timed (the model's cost per window is the same
both ways). Peak memory: the largest ``ru_maxrss`` of a child, from a fresh pool per
mode (Linux reports it in KiB).

    python benchmarks/windows_speed.py --minutes 10 --window 10 --processes 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"


def make_video(path: str, minutes: float, width: int, height: int) -> str:
    import av
    import cv2

    with av.open(str(SAMPLE)) as container:
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (width, height),
                             interpolation=cv2.INTER_LINEAR)
                  for f in container.decode(video=0)]
    count = int(minutes * 60 * 25)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast", "g": "250"}
        for k in range(count):
            # Play forward then backward so the loop has no jump.
            period = 2 * len(frames) - 2
            i = k % period
            image = frames[i if i < len(frames) else period - i]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def run_mode(video: str, windows, per_item: int, processes: int, as_items: bool) -> dict:
    """Decode in a subprocess of its own so that ru_maxrss of its children is this
    mode's alone."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from fractions import Fraction
from beam_i3d.media.decode_pool import DecodePool
from beam_i3d.job.windows import Window, split_items
windows = [Window(i, Fraction(s), Fraction(e)) for i, s, e in {[(w.index, str(w.start), str(w.end)) for w in windows]!r}]
with DecodePool({processes}) as pool:
    pool.submit_probe("warm", {video!r}); list(pool.results())
    started = time.perf_counter()
    frames = 0; failed = 0
    if {as_items}:
        for k, item in enumerate(split_items(windows, {per_item})):
            pool.submit(k, {video!r}, windows=item)
    else:
        for w in windows:
            pool.submit(w.index, {video!r}, float(w.start), float(w.end), max_seconds=None)
    for f in pool.results():
        parts = f.result if isinstance(f.result, list) else [f.result]
        for p in parts:
            if isinstance(p, BaseException):
                failed += 1
            else:
                frames += p.num_frames
            del p
        del parts, f
    seconds = time.perf_counter() - started
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=seconds, frames=frames, failed=failed, child_kib=child, parent_kib=me)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--stride", type=float, default=None)
    parser.add_argument("--windows-per-item", type=int, default=None)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--video", help="use this video instead of making one")
    args = parser.parse_args()

    from beam_i3d.media.video import probe_duration
    from beam_i3d.job.windows import default_windows_per_item, plan_windows

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            started = time.perf_counter()
            video = make_video(os.path.join(tmp, "long.mp4"), args.minutes, args.width,
                               args.height)
            print(f"made {args.minutes:g} min of {args.width}x{args.height} in "
                  f"{time.perf_counter() - started:.0f} s "
                  f"({os.path.getsize(video) / 1e6:.0f} MB)")
        duration = probe_duration(video)
        windows = plan_windows(0, duration, args.window, args.stride)
        per_item = args.windows_per_item or default_windows_per_item(args.window, args.stride)
        print(f"{len(windows)} windows of {args.window:g} s (stride "
              f"{args.stride or args.window:g} s), {per_item} per item, "
              f"{args.processes} decoding processes")
        results = {}
        for name, as_items in (("windowed", True), ("clips", False)):
            r = run_mode(video, windows, per_item, args.processes, as_items)
            results[name] = r
            print(f"{name:9s} {r['seconds']:7.1f} s  {len(windows) / r['seconds']:6.2f} windows/s  "
                  f"{r['frames'] / r['seconds']:6.0f} output frames/s  failed {r['failed']}  "
                  f"peak child {r['child_kib'] / 1024:.0f} MiB  parent {r['parent_kib'] / 1024:.0f} MiB")
        ratio = results["clips"]["seconds"] / results["windowed"]["seconds"]
        print(f"windowed / clips speed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
