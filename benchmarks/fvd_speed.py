"""``beam-i3d fvd`` against ``beam-i3d score`` on the same clips: time and peak memory.

    python benchmarks/fvd_speed.py [--clips 24] [--frames 16] [--small 8]

Makes N H.264 clips of ``frames`` frames (340x256, 25 fps, textured motion; the
clips of ``pipeline_speed.py``), then runs, each as a user runs it (a subprocess,
DirectRunner, default running mode; start-up and the model load inside its time):

1. ``beam-i3d score`` on a manifest of the clips (``--max-seconds frames/25``: the same
   number of frames per clip);
2. ``beam-i3d fvd --real`` on the same manifest (the statistics of one set: every clip
   read, forwarded and folded into the moments once);
3. the same ``fvd`` on the first ``small`` clips, to show that its peak memory does not
   grow with the number of clips.

Prints wall time, clips/s and the peak resident memory of each run (the process tree's
largest process, from ``wait4``'s rusage).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline_speed import make_clips  # noqa: E402


def timed(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command run to completion."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[3]} exited {process.returncode}")
    return seconds, usage.ru_maxrss / 1024


def manifest(directory: str, paths: list[str], name: str) -> str:
    path = os.path.join(directory, f"{name}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_uri"])
        writer.writerows([p] for p in paths)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--small", type=int, default=8)
    args = parser.parse_args()
    beam_i3d = [sys.executable, "-m", "beam_i3d"]
    with tempfile.TemporaryDirectory() as tmp:
        # A little longer than the frames taken, so every clip has them all.
        paths = make_clips(tmp, args.clips, (args.frames + 2) / 25)
        full = manifest(tmp, paths, "all")
        small = manifest(tmp, paths[:args.small], "small")
        score = timed(beam_i3d + ["score", "--manifest", full, "--output",
                                  os.path.join(tmp, "score"), "--quiet", "--no-embeddings",
                                  "--max-seconds", f"{args.frames / 25:g}"])
        fvd = timed(beam_i3d + ["fvd", "--real", full, "--output", os.path.join(tmp, "fvd"),
                                "--frames", str(args.frames)])
        fvd_small = timed(beam_i3d + ["fvd", "--real", small, "--output",
                                      os.path.join(tmp, "fvd_small"),
                                      "--frames", str(args.frames)])
    n = args.clips
    print(f"machine: {os.cpu_count()} CPUs; {n} clips of {args.frames} frames, 340x256")
    for name, clips, (seconds, rss) in (("score", n, score), ("fvd --real", n, fvd),
                                         (f"fvd --real ({args.small} clips)", args.small,
                                          fvd_small)):
        print(f"{name}: {seconds:.1f} s, {clips / seconds:.2f} clips/s, peak RSS {rss:.0f} MiB")
    print(f"fvd / score time: {fvd[0] / score[0]:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
