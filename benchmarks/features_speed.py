"""Research features at THUMOS14 settings: two-stream I3D inputs over windows of 16
frames every 4 at the video's own 29.97 fps (``score --preset thumos14-actionformer``),
decoded and preprocessed three ways, with the ``opencv`` and ``tf`` flow backends:

* ``items``: as ``score`` does now: work items of consecutive windows decoded once in the
  decode pool, each frame pair's TV-L1 computed once per item and sliced per window;
* ``per-window``: the same items, but each window's flow computed on its own frames (the
  way before; each pair 4 times at stride 4), kept in the pool as ``flow_per_window``;
* ``loop``: a plain loop, window by window, in one process, as per-video extractors
  run the release recipe: decode the window's 16 frames (a seek each), its flow, next.

Only decoding and preprocessing (RGB crops and flow) are timed (wall clock, and the CPU
time of the process and its children, which follows a shared machine's load much less): the model's forward is
the same per window in every mode. Each mode runs in a fresh process, so that its peak
memory is its own: ``ru_maxrss`` of the process and the largest of its decoding
children (Linux, KiB), having read every page of each result as the model would.

    python benchmarks/features_speed.py --seconds 3 --backends opencv
    python benchmarks/features_speed.py --seconds 3 6 --modes items --windows-per-item 8

The 720p video is made once per length (the bundled cricket sample, upscaled, played
forward and back) with ``libx264`` at 30000/1001 fps; ``--keep DIR`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"
NTSC = Fraction(30000, 1001)
W, S = 16, 4


def make_video(path: str, seconds: float, width: int = 1280, height: int = 720) -> str:
    """The cricket sample played forwards and backwards at 29.97 fps for ``seconds``
    (windows_speed.py's writer, at the NTSC rate)."""
    from windows_speed import make_video as write_looped

    return write_looped(path, Fraction(seconds).limit_denominator(1000) / 60, width, height,
                        fps=NTSC)


def _touch(tensors) -> None:
    """Read every page of a result, as the model would (mapped memory counts once read)."""
    for array in (tensors.rgb, tensors.flow):
        if array is not None:
            int(array.reshape(-1)[::4096].sum())


def run_mode(video: str, mode: str, backend: str, processes: int, per_item: int | None,
             batch_pairs: int | None) -> dict:
    from beam_i3d.job.windows import WindowOptions, frame_windows, plan_frame_windows, split_items
    from beam_i3d.media.video_open import probe_frame_times

    streams = ("rgb", "flow")
    frames = probe_frame_times(video)
    windows = frame_windows(plan_frame_windows(frames.count, W, S), frames.time)
    options = WindowOptions(window_frames=W, stride_frames=S, fps="native", per_item=per_item)
    started = time.monotonic()
    done = failed = 0
    if mode == "loop":
        from beam_i3d.media.preprocess import decode_for_streams, finish_clip

        for w in windows:
            clip = decode_for_streams(video, w.start, streams=streams, max_seconds=None,
                                      fps="native", max_frames=w.frames)
            tensors = finish_clip(clip, streams=streams, flow_backend=backend,
                                  flow_batch_pairs=batch_pairs, loop_to=W)
            _touch(tensors)
            done += 1
    else:
        from beam_i3d.media.decode_pool import DecodePool

        items = split_items(windows, options.windows_per_item)
        with DecodePool(processes) as pool:
            for k, item in enumerate(items):
                pool.submit(k, video, streams=streams, flow_backend=backend,
                            flow_batch_pairs=batch_pairs, windows=item, fps="native",
                            loop_to=W, flow_per_window=mode == "per-window")
            for finished in pool.results():
                for part in finished.result if isinstance(finished.result, list) else [
                        finished.result]:
                    if isinstance(part, BaseException):
                        failed += 1
                        print(f"error: {type(part).__name__}: {part}", file=sys.stderr)
                    else:
                        _touch(part)
                        done += 1
    seconds = time.monotonic() - started
    usage = [resource.getrusage(r) for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return {"cpu_seconds": sum(u.ru_utime + u.ru_stime for u in usage),"mode": mode, "backend": backend, "frames": frames.count, "windows": len(windows),
            "done": done, "failed": failed, "seconds": seconds,
            "windows_per_item": options.windows_per_item,
            "peak_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_mb_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0],
                        help="video lengths to measure (default: 3)")
    parser.add_argument("--modes", nargs="+", default=["items", "per-window", "loop"])
    parser.add_argument("--backends", nargs="+", default=["opencv", "tf"])
    parser.add_argument("--processes", type=int, default=2, help="decoding children")
    parser.add_argument("--windows-per-item", type=int, default=None,
                        help="windows per work item (default: score's, about 60 s)")
    parser.add_argument("--flow-batch-pairs", type=int, default=None)
    parser.add_argument("--keep", help="directory to keep the videos in")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one mode, JSON out
    args = parser.parse_args()
    if args.one:
        video, mode, backend = args.one.split("|")
        print(json.dumps(run_mode(video, mode, backend, args.processes,
                                  args.windows_per_item, args.flow_batch_pairs)))
        return
    directory = args.keep or tempfile.mkdtemp(prefix="features_speed_")
    os.makedirs(directory, exist_ok=True)
    print(f"CPU: {os.cpu_count()} cores; load: {os.getloadavg()}", flush=True)
    results = []
    for seconds in args.seconds:
        video = os.path.join(directory, f"ntsc_720p_{seconds:g}s.mp4")
        if not os.path.exists(video):
            make_video(video, seconds)
        for backend in args.backends:
            for mode in args.modes:
                command = [sys.executable, __file__, "--one", f"{video}|{mode}|{backend}",
                           "--processes", str(args.processes)]
                if args.windows_per_item:
                    command += ["--windows-per-item", str(args.windows_per_item)]
                if args.flow_batch_pairs:
                    command += ["--flow-batch-pairs", str(args.flow_batch_pairs)]
                out = subprocess.run(command, check=True, capture_output=True, text=True,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["video_seconds"] = seconds
                results.append(row)
                print(f"{seconds:g} s ({row['frames']} frames, {row['windows']} windows), "
                      f"{backend:6s} {mode:10s}: {row['seconds']:7.1f} s wall, "
                      f"{row['windows'] / row['seconds']:6.2f} windows/s, "
                      f"{row['cpu_seconds']:7.1f} s CPU (process and children), "
                      f"{row['frames'] / row['seconds'] * 3600 / 108000:6.3f} h of video per h; "
                      f"peak {row['peak_mb_process']:.0f} MB process, "
                      f"{row['peak_mb_child']:.0f} MB child "
                      f"({row['windows_per_item']} windows/item)"
                      + (f"; {row['failed']} FAILED" if row["failed"] else ""), flush=True)
    for backend in args.backends:
        for seconds in args.seconds:
            by_mode = {r["mode"]: r["cpu_seconds"] for r in results
                       if r["backend"] == backend and r["video_seconds"] == seconds}
            if "items" in by_mode:
                ratios = ", ".join(f"{by_mode[m] / by_mode['items']:.2f}x less CPU than {m}"
                                   for m in by_mode if m != "items")
                if ratios:
                    print(f"{backend} at {seconds:g} s: items {ratios}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
