"""Windowed decoding of a long video against the same windows as separate clips.

Makes a long 720p H.264 video by looping real content (the bundled cricket sample,
upscaled), then decodes its ``--window``/``--stride`` windows through the decode pool
two ways and prints windows/s and the peak memory of the decoding children:

* windowed: work items of ``--windows-per-item`` windows, each decoded once (one seek)
  and cut into windows, as ``score --window`` does;
* clips: one task per window (a seek and a decode per window), as a manifest of the
  same windows as separate clips would be.

Only decoding and preprocessing are timed (the model's cost per window is the same
both ways). Besides the wall clock, the CPU time of the decoding children (less their
start-up, measured on a pool that only starts) and of the collecting process: on a
machine shared with other work the wall clock follows their load, CPU time much less.
Peak memory: the largest ``ru_maxrss`` of a child, from a fresh pool per mode (Linux
reports it in KiB), and the collecting process's own, having read every page of each
result's frames as the model would (the results are mapped shared memory, which counts
only once touched).

The keyframes decide what a separate clip's seek costs: it decodes from the keyframe at
or before its start. The default video is 30 fps with x264's default GOP (``--keyint
250``: a keyframe every 8.33 s; ``ultrafast`` turns scene-cut keyframes off, so they
fall exactly every 250 frames), which do not fall on the window starts (only every
50 s). ``--aligned`` is the earlier set-up, 25 fps and a keyframe every 250 frames =
every 10 s, on every start of a 10-s window: there a clip's seek costs nothing.
``--save-video PATH`` keeps the video made, ``--video PATH`` reuses it. ``--streams
rgb,flow`` adds the optical flow (``--flow-backend opencv``, the default here: computed
in the children; ``tf``: in the collecting process).

    python benchmarks/windows_speed.py --minutes 10 --window 10 --processes 2
    python benchmarks/windows_speed.py --minutes 10 --window 10 --processes 2 --aligned
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"


def make_video(path: str, minutes: float, width: int, height: int, fps: int | Fraction = 30,
               keyint: int = 250) -> str:
    """The cricket sample resized to ``width`` x ``height``, played forwards then backwards
    for ``minutes`` at ``fps`` (an int, or a Fraction such as 30000/1001), H.264."""
    import av
    import cv2

    with av.open(str(SAMPLE)) as container:
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (width, height),
                             interpolation=cv2.INTER_LINEAR)
                  for f in container.decode(video=0)]
    count = int(minutes * 60 * fps)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast", "g": str(keyint)}
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


def keyframe_times(video: str) -> list[float]:
    """Presentation times (s) of the video stream's keyframes (demuxing only)."""
    import av

    with av.open(video) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return [float((p.pts - origin) * stream.time_base) for p in container.demux(stream)
                if p.is_keyframe and p.pts is not None]


def seek_preroll(keyframes: list[float], windows) -> float:
    """Mean seconds a window decoded as its own clip decodes before its start: from the
    keyframe at or before the start."""
    import bisect

    gaps = [float(w.start) - keyframes[max(0, bisect.bisect_right(keyframes, float(w.start)
                                                                  + 1e-9) - 1)]
            for w in windows]
    return sum(gaps) / len(gaps)


def run_mode(video: str, windows, per_item: int, processes: int, as_items: bool,
             streams=("rgb",), flow_backend: str = "opencv") -> dict:
    """Decode in a subprocess of its own so that ru_maxrss of its children is this
    mode's alone."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from fractions import Fraction
from beam_i3d.media.decode_pool import DecodePool
from beam_i3d.job.windows import Window, split_items
windows = [Window(i, Fraction(s), Fraction(e)) for i, s, e in {[(w.index, str(w.start), str(w.end)) for w in windows]!r}]
def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
# A pool that only starts and probes: its children's CPU is the start-up to subtract.
with DecodePool({processes}) as pool:
    pool.submit_probe("warm", {video!r}); list(pool.results())
startup = children_cpu()
with DecodePool({processes}) as pool:
    pool.submit_probe("warm", {video!r}); list(pool.results())
    started = time.perf_counter()
    parent_started = time.process_time()
    frames = 0; failed = 0; touched = 0
    if {as_items}:
        for k, item in enumerate(split_items(windows, {per_item})):
            pool.submit(k, {video!r}, windows=item, streams={tuple(streams)!r},
                        flow_backend={flow_backend!r})
    else:
        for w in windows:
            pool.submit(w.index, {video!r}, float(w.start), float(w.end), max_seconds=None,
                        streams={tuple(streams)!r}, flow_backend={flow_backend!r})
    for f in pool.results():
        parts = f.result if isinstance(f.result, list) else [f.result]
        for p in parts:
            if isinstance(p, BaseException):
                failed += 1
            else:
                frames += p.num_frames
                # Read a byte of every page, as the model's batching reads the frames
                # (mapped shared memory counts in ru_maxrss only once touched).
                touched += int(p.rgb.reshape(-1)[::4096].sum() > -1)
            del p
        del parts, f
    seconds = time.perf_counter() - started
    parent_cpu = time.process_time() - parent_started
child_cpu = children_cpu() - 2 * startup
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=seconds, frames=frames, failed=failed, child_kib=child, parent_kib=me,
                      child_cpu=child_cpu, parent_cpu=parent_cpu, startup_cpu=startup)))
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
    parser.add_argument("--fps", type=int, default=30, help="frame rate of the video made")
    parser.add_argument("--keyint", type=int, default=250,
                        help="frames between keyframes of the video made (x264's default 250)")
    parser.add_argument("--aligned", action="store_true",
                        help="25 fps, a keyframe every 250 frames: on every 10-s window start")
    parser.add_argument("--video", help="use this video instead of making one")
    parser.add_argument("--save-video", metavar="PATH", help="keep the video made here")
    parser.add_argument("--streams", default="rgb",
                        help="rgb (default) or rgb,flow (the flow with --flow-backend)")
    parser.add_argument("--flow-backend", default="opencv", choices=("opencv", "tf"),
                        help="with --streams rgb,flow (default opencv: in the children)")
    args = parser.parse_args()
    if args.aligned:
        args.fps, args.keyint = 25, 250

    from beam_i3d.media.video import probe_duration
    from beam_i3d.job.windows import default_windows_per_item, plan_windows

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            started = time.perf_counter()
            video = make_video(args.save_video or os.path.join(tmp, "long.mp4"), args.minutes,
                               args.width, args.height, args.fps, args.keyint)
            print(f"made {args.minutes:g} min of {args.width}x{args.height} at {args.fps} fps, "
                  f"keyint {args.keyint}, in {time.perf_counter() - started:.0f} s "
                  f"({os.path.getsize(video) / 1e6:.0f} MB)")
        duration = probe_duration(video)
        windows = plan_windows(0, duration, args.window, args.stride)
        per_item = args.windows_per_item or default_windows_per_item(args.window, args.stride)
        keyframes = keyframe_times(video)
        on_key = sum(any(abs(k - float(w.start)) < 1e-3 for k in keyframes) for w in windows)
        gaps = [b - a for a, b in zip(keyframes, keyframes[1:])]
        print(f"{float(duration):.1f} s, {len(keyframes)} keyframes (every "
              f"{min(gaps, default=0):.2f}-{max(gaps, default=0):.2f} s); {on_key} of "
              f"{len(windows)} window starts on a keyframe; a window as its own clip "
              f"decodes {seek_preroll(keyframes, windows):.2f} s before its start on average")
        print(f"{len(windows)} windows of {args.window:g} s (stride "
              f"{args.stride or args.window:g} s), {per_item} per item, "
              f"{args.processes} decoding processes")
        results = {}
        for name, as_items in (("windowed", True), ("clips", False)):
            r = run_mode(video, windows, per_item, args.processes, as_items,
                         args.streams.split(","), args.flow_backend)
            results[name] = r
            print(f"{name:9s} {r['seconds']:7.1f} s  {len(windows) / r['seconds']:6.2f} windows/s  "
                  f"{r['frames'] / r['seconds']:6.0f} output frames/s  failed {r['failed']}  "
                  f"CPU: children {r['child_cpu']:.1f} s, collecting process "
                  f"{r['parent_cpu']:.1f} s ({len(windows) / (r['child_cpu'] + r['parent_cpu']):.2f} "
                  f"windows per CPU-second)  peak child {r['child_kib'] / 1024:.0f} MiB  "
                  f"parent {r['parent_kib'] / 1024:.0f} MiB")
        ratio = results["clips"]["seconds"] / results["windowed"]["seconds"]
        cpu = {name: r["child_cpu"] + r["parent_cpu"] for name, r in results.items()}
        print(f"windowed / clips speed: {ratio:.2f}x wall clock, "
              f"{cpu['clips'] / cpu['windowed']:.2f}x in CPU time "
              f"(children's start-up, {results['clips']['startup_cpu']:.1f} s, left out)")


if __name__ == "__main__":
    main()
