"""``beam-i3d fvd`` against ``beam-i3d score`` on the same clips: time and peak memory.

    python benchmarks/fvd_speed.py [--clips 24] [--frames 16] [--small 8] [--two-sets]
                                   [--no-score] [--repeat 1]

Makes N H.264 clips of ``frames`` frames (340x256, 25 fps, textured motion; the
clips of ``pipeline_speed.py``), then runs, each as a user runs it (a subprocess,
DirectRunner, default running mode; start-up and the model load inside its time):

1. ``beam-i3d score`` on a manifest of the clips (``--max-seconds frames/25``: the same
   number of frames per clip);
2. ``beam-i3d fvd --real`` on the same manifest (the statistics of one set: every clip
   read, forwarded and folded into the moments once);
3. the same ``fvd`` on the first ``small`` clips, to show that its peak memory does not
   grow with the number of clips.

``--two-sets``: the shape of a real comparison (2048 vs 2048, scaled down): N more clips
as the fake set; ``score`` runs on all 2N clips, ``fvd`` is ``--real A --fake B`` (N
clips a side, both sides' statistics and the distance), the small run ``small`` a side.

Prints wall time, clips/s and the peak resident memory of each run (the process tree's
largest process, from ``wait4``'s rusage). ``--no-score`` leaves ``score`` out (half the
time of a memory study); ``--repeat R`` runs each ``fvd`` R times and prints every peak,
since one run's peak varies by hundreds of MiB between runs of the same clips.
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
    parser.add_argument("--two-sets", action="store_true",
                        help="a real and a fake set of --clips each (see the module doc)")
    parser.add_argument("--no-score", action="store_true", help="run only fvd")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each fvd")
    args = parser.parse_args()
    beam_i3d = [sys.executable, "-m", "beam_i3d"]
    sides = 2 if args.two_sets else 1
    with tempfile.TemporaryDirectory() as tmp:
        # A little longer than the frames taken, so every clip has them all.
        paths = make_clips(tmp, sides * args.clips, (args.frames + 2) / 25)
        real, fake = paths[:args.clips], paths[args.clips:]
        everything = manifest(tmp, paths, "all")

        def fvd_command(n: int, name: str) -> list[str]:
            command = beam_i3d + ["fvd", "--real", manifest(tmp, real[:n], f"{name}_real"),
                                  "--output", os.path.join(tmp, name),
                                  "--frames", str(args.frames)]
            if args.two_sets:
                command += ["--fake", manifest(tmp, fake[:n], f"{name}_fake")]
            return command

        score = None if args.no_score else timed(
            beam_i3d + ["score", "--manifest", everything, "--output",
                        os.path.join(tmp, "score"), "--quiet", "--no-embeddings",
                        "--max-seconds", f"{args.frames / 25:g}"])
        fvds, smalls = [], []
        for r in range(args.repeat):
            fvds.append(timed(fvd_command(args.clips, f"fvd{r}")))
            smalls.append(timed(fvd_command(args.small, f"fvd_small{r}")))
    n = args.clips * sides
    what = "--real --fake" if args.two_sets else "--real"
    print(f"machine: {os.cpu_count()} CPUs; {n} clips of {args.frames} frames, 340x256"
          + (f" ({args.clips} a side)" if args.two_sets else ""))
    runs = [] if score is None else [("score", n, score)]
    for fvd, fvd_small in zip(fvds, smalls):
        runs += [(f"fvd {what}", n, fvd),
                 (f"fvd {what} ({args.small * sides} clips)", args.small * sides, fvd_small)]
    for name, clips, (seconds, rss) in runs:
        print(f"{name}: {seconds:.1f} s, {clips / seconds:.2f} clips/s, peak RSS {rss:.0f} MiB")
    if score is not None:
        print(f"fvd / score time: {fvds[0][0] / score[0]:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
