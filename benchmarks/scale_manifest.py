"""A Kinetics-700-size manifest through `beam-i3d score` with the default options.

650,000 rows in the official Kinetics CSV layout (``label,youtube_id,time_start,
time_end,split``) with ``--video-template`` pointing at files that do not exist, so every
row must end as exactly one error row. Prints the wall time, the peak resident memory of
the job (the launcher and every process it started, sampled), its CPU time (less
sensitive than the wall time to other work on a shared machine), and what the end-of-run
reconciliation and ``beam-i3d verify`` say.

    python benchmarks/scale_manifest.py [--rows 650000] [--mode in_memory] [--profile F]

``--profile F`` runs ``score`` under cProfile and writes its stats to F (the DirectRunner's
default ``in_memory`` mode runs the whole pipeline in the launcher's process, so the
profile covers every stage but the decoding children); it slows the run down, and its
times are wall-clock times, which other work on a shared machine stretches.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_speed import cpu_model  # noqa: E402 (the benchmarks name the CPU alike)


# score under cProfile (``beam-i3d``'s own entry point ends with os._exit, which would
# lose the stats): argv[1] is the stats file, the rest score's arguments. cProfile's
# default clock is the wall clock: a CPU-time clock (time.process_time, a system call per
# reading) made a 650,000-row run take over half an hour.
_PROFILED = ("import cProfile, sys; from beam_i3d.cli import main; p = cProfile.Profile(); "
             "code = p.runcall(main, sys.argv[2:]); p.dump_stats(sys.argv[1]); "
             "sys.stdout.flush(); sys.stderr.flush(); import os; os._exit(code)")


def write_manifest(path: str, rows: int) -> None:
    with open(path, "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        for i in range(rows):
            f.write(f"abseiling,vid{i:07d},{i % 300},{i % 300 + 10},train\n")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=650_000)
    parser.add_argument("--mode", default=None,
                        help="--direct_running_mode to pass (default: the job's default)")
    parser.add_argument("--profile", metavar="FILE",
                        help="run score under cProfile, writing its stats to FILE")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="beam-i3d-scale-")
    manifest = os.path.join(work, "k700.csv")
    write_manifest(manifest, args.rows)
    out = os.path.join(work, "out")
    template = os.path.join(work, "videos", "{split}", "{youtube_id}_{time_start:06d}_"
                            "{time_end:06d}.mp4")
    entry = ["-c", _PROFILED, os.path.abspath(args.profile)] if args.profile else ["-m", "beam_i3d"]
    command = [sys.executable, *entry, "score", "--manifest", manifest,
               "--output", out, "--video-template", template, "--ignore-times", "--quiet",
               "--max-error-rate", "1"]
    if args.mode:
        command += ["--direct_running_mode", args.mode]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); rows: {args.rows:,}; "
          f"mode: {args.mode or 'default'}", flush=True)
    started = time.monotonic()
    cpu_before = os.times()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    elapsed = time.monotonic() - started
    sampler.join()
    cpu = os.times()
    cpu_s = (cpu.children_user - cpu_before.children_user
             + cpu.children_system - cpu_before.children_system)
    print(f"score: exit {proc.returncode}, {elapsed:.1f} s, peak RSS {peak[0] / 2**30:.2f} GiB "
          f"(launcher + workers), CPU {cpu_s:.1f} s (user + system, all its processes)")
    for line in stderr.splitlines():
        if line.startswith("beam-i3d score:"):
            print("  " + line)
    started = time.monotonic()
    verify = subprocess.run(
        [sys.executable, "-m", "beam_i3d", "verify", "--manifest", manifest, "--output", out,
         "--video-template", template, "--ignore-times"], capture_output=True, text=True)
    print(f"verify: exit {verify.returncode}, {time.monotonic() - started:.1f} s")
    for line in verify.stdout.splitlines():
        print("  " + line)
    return 0 if proc.returncode == 0 and verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
