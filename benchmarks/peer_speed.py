"""``beam-i3d score --window`` side by side with the peer, video_features (v-iashin), on the
same windows of the same videos, on this machine.

    python benchmarks/peer_speed.py --peer-dir /work/peer/video_features \\
        --peer-python /work/peer/venv/bin/python [--seconds 10] [--runs 3] [--size 340x256]
    python benchmarks/peer_speed.py ... --minutes 10 --runs 1

The peer is not part of this repository and none of its code is copied here: it is
imported from its own checkout (``--peer-dir``) by this same file run under the peer's own
interpreter (``--peer-python``, a virtualenv with its requirements: torch, torchvision,
omegaconf, opencv-python-headless), in a subprocess. The peer downloads its pretrained
I3D weights, which cannot be done here, so in that subprocess ``torch.load`` of its
(absent) ``models/i3d/checkpoints/i3d_rgb.pt`` returns the state dict of a freshly
initialised I3D of its own class: random weights of the right shapes (speed does not
depend on the values). Nothing else of the peer is changed: its config
(``configs/i3d.yml``) merged with ``feature_type=i3d streams=rgb stack_size=16
step_size=4 device=cpu on_extraction=save_numpy``, its ``sanity_check`` and its
``ExtractI3D._extract`` (OpenCV decode, PIL resize to 256 short side, 224 centre crop, one
forward per stack), with ``torch.set_num_threads(--threads)`` (default 2).

Ours: ``python -m beam_i3d score --window 0.64 --stride 0.16`` (this interpreter) from the
tree this script is in (first on PYTHONPATH, so Beam's workers import it too), RGB only,
bundled Kinetics-400 weights, on a one-row manifest whose ``end_sec`` is the end of the
peer's last window, so both score the same windows (see ``same_windows``). Each
``--ours-args "..."`` adds a variant of ours with those extra options; by default the plain
command, or, when ``score --help`` of the tree under test offers ``--model-backend``, two
variants: ``--model-backend tf`` and ``--model-backend openvino``. ``--ours-tree DIR``
(repeatable) runs other checkouts of beam-i3d (e.g. another branch's tree) instead of
this one, each with its variants, in the same round-robin.

The videos: the bundled cricket sample (UCF101, real motion) resized to ``--size`` and
played forwards and backwards in a loop, H.264 (x264 ``ultrafast``, CRF 23, a keyframe
every 250 frames) at 25 fps, the rate both tools sample at, so the peer needs no
re-encoding (its ``extraction_fps`` stays null) and both see the same frames.

Prints, per run: the wall clock of the whole command as a user runs it (interpreter
start, imports, model load, decode, forwards, writing), its CPU time (user + system of
the command and all its descendants, orphans too: Beam's workers, the decoding children
forked by multiprocessing's forkserver, which outlives the command), windows made, and for the
peer also its extraction alone and the time inside its I3D forwards; then the median
over ``--runs`` (runs go round-robin: peer, ours, [variants], peer, ...) and the ratios
ours / peer of both. Under load the wall clock follows the other work on the machine;
CPU time much less so. Also the CPU (model name, family/model, AVX2 / AVX-512 / AMX flags) and the
1-minute load average before and after each run: on a shared machine a figure is only as
good as the load it was taken under.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FPS = 25
STACK, STEP = 16, 4  # peer frames per window / between window starts (0.64 s / 0.16 s)


# --- run inside the peer's interpreter (imports nothing of ours) ---------------------------

def run_peer_inside(peer_dir: str, video: str, work: str, threads: int) -> dict:
    """Extract the RGB I3D features of ``video`` with the peer's own code; return timings
    and the number of windows (rows of its saved ``*_rgb.npy``)."""
    started = time.perf_counter()
    peer_dir = os.path.abspath(peer_dir)
    os.chdir(peer_dir)  # its checkpoint and config paths are relative to its root
    sys.path.insert(0, peer_dir)
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from omegaconf import OmegaConf
    from models.i3d.i3d_src.i3d_net import I3D
    from utils.utils import build_cfg_path, sanity_check

    real_load = torch.load

    def random_i3d_weights(f, *args, **kwargs):
        name = os.path.basename(str(f))
        if name in ("i3d_rgb.pt", "i3d_flow.pt") and not os.path.exists(str(f)):
            torch.manual_seed(0)
            return I3D(num_classes=400, modality=name[4:-3]).state_dict()
        return real_load(f, *args, **kwargs)

    torch.load = random_i3d_weights
    cli = OmegaConf.create(dict(
        feature_type="i3d", streams="rgb", stack_size=STACK, step_size=STEP, device="cpu",
        on_extraction="save_numpy", output_path=os.path.join(work, "out"),
        tmp_path=os.path.join(work, "tmp"), video_paths=[video]))
    args = OmegaConf.merge(OmegaConf.load(build_cfg_path("i3d")), cli)
    sanity_check(args)
    from models.i3d.extract_i3d import ExtractI3D

    extractor = ExtractI3D(args)
    model = extractor.name2module["model"]["rgb"]
    forward = {"seconds": 0.0, "cpu": 0.0, "calls": 0, "t": 0.0, "c": 0.0}

    def before(module, inputs):
        forward["t"], forward["c"] = time.perf_counter(), time.process_time()

    def after(module, inputs, output):
        forward["seconds"] += time.perf_counter() - forward["t"]
        forward["cpu"] += time.process_time() - forward["c"]
        forward["calls"] += 1

    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)
    loaded = time.perf_counter()
    extractor._extract(video)  # prints and swallows its errors: the .npy check below tells
    done = time.perf_counter()
    saved = os.path.join(args.output_path, f"{Path(video).stem}_rgb.npy")
    feats = np.load(saved) if os.path.exists(saved) else None
    return {"windows": None if feats is None else int(feats.shape[0]),
            "feature_dim": None if feats is None else int(feats.shape[1]),
            "setup_s": loaded - started, "extract_s": done - loaded,
            "forward_s": forward["seconds"], "forward_cpu_s": forward["cpu"],
            "forward_calls": forward["calls"],
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# --- the driver (our interpreter) ----------------------------------------------------------

def cpu_name() -> str:
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if ":" in line:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni") if f in flags]
    simd.append("AMX" if any(f.startswith("amx") for f in flags) else "no AMX")
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model "
            f"{info.get('model', '?')}), {os.cpu_count()} vCPUs, {', '.join(simd)}")


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux), so that the CPU
    time of processes that outlive their parent (multiprocessing's forkserver and the
    decoding children it forks, its resource tracker) still reaches RUSAGE_CHILDREN."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed: CPU times would miss orphans")


def reap_orphans(timeout: float = 60.0) -> int:
    """Wait for every descendant left after a command (orphans reparented here); return
    how many were still running at ``timeout`` (their CPU time is then missing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            if time.monotonic() > deadline:
                return sum(1 for d in os.listdir("/proc")
                           if d.isdigit() and _parent(d) == os.getpid())
            time.sleep(0.05)


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def children_cpu() -> float:
    """CPU seconds (user + system) of the waited-for descendants so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def peer_windows(frames: int) -> int:
    """Windows the peer makes of ``frames`` frames: it runs a stack once it holds
    ``STACK + 1`` frames (the +1 is the optical-flow pair's extra frame, kept for RGB-only
    runs too) and uses the first ``STACK`` of them, then drops ``STEP``."""
    return max(0, (frames - STACK - 1) // STEP + 1)


def ours_windows(frames: int) -> int:
    """Windows of ``plan_windows`` over the whole video at 0.64 / 0.16 s: up to the first
    window that reaches the end, which may be shorter than 16 frames."""
    k = 0
    while k * STEP + STACK < frames:  # window k ends before the video does: one more
        k += 1
    return k + 1


def same_windows(frames: int) -> tuple[int, float]:
    """The peer's window count and the end (s) of its last window: a manifest row ending
    there gives ours exactly the peer's windows, all of 16 frames."""
    n = peer_windows(frames)
    return n, ((n - 1) * STEP + STACK) / FPS


def make_video(path: str, seconds: float, width: int, height: int) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from windows_speed import make_video as make_looped

    make_looped(path, (seconds + 0.5 / FPS) / 60, width, height, fps=FPS, keyint=250)
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def has_option(tree: Path, option: str) -> bool:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-m", "beam_i3d", "score", "--help"], env=env,
                         cwd=tree, capture_output=True, text=True)
    return option in out.stdout


def time_peer(opts, video: str, work: str) -> dict:
    script = str(Path(__file__).resolve())
    code = (f"import json, sys; sys.path.insert(0, {str(Path(script).parent)!r}); "
            f"import peer_speed as p; r = p.run_peer_inside({opts.peer_dir!r}, {video!r}, "
            f"{work!r}, {opts.threads}); print('PEER ' + json.dumps(r))")
    before = load1()
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run([opts.peer_python, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    orphans = reap_orphans()
    cpu = children_cpu() - cpu
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEER ")]
    if proc.returncode or not lines:
        sys.exit(f"peer failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][5:])
    if result["windows"] is None:
        sys.exit(f"peer wrote no features:\n{proc.stdout[-3000:]}")
    return dict(result, wall_s=wall, cpu_s=cpu, orphans=orphans, load_before=before, load_after=load1())


def time_ours(tree: Path, video: str, end_sec: float, work: str, extra: list[str]) -> dict:
    import pyarrow.parquet as pq

    manifest = os.path.join(work, "manifest.csv")
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["video_uri", "start_sec", "end_sec"], [video, 0, end_sec]])
    out = os.path.join(work, "out")
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "beam_i3d", "score", "--manifest", manifest,
               "--output", out, "--window", "0.64", "--stride", "0.16", "--quiet", *extra]
    before = load1()
    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - start
    orphans = reap_orphans()
    cpu = children_cpu() - cpu
    if proc.returncode:
        sys.exit(f"ours failed (exit {proc.returncode}): {shlex.join(command)}\n"
                 f"{proc.stderr[-3000:]}")

    def rows(sub: str) -> int:
        files = sorted(Path(out, sub).glob("*.parquet"))
        return sum(pq.ParquetFile(str(p)).metadata.num_rows for p in files)

    return {"windows": rows("windows"), "errors": rows("errors"), "wall_s": wall, "cpu_s": cpu,
            "orphans": orphans,
            "load_before": before, "load_after": load1()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-dir", required=True, help="a checkout of video_features")
    parser.add_argument("--peer-python", required=True,
                        help="the interpreter of a virtualenv with the peer's requirements")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=10.0, help="video length (default 10)")
    length.add_argument("--minutes", type=float, help="video length in minutes")
    parser.add_argument("--size", default="340x256", help="WxH of the video (default 340x256)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, round-robin")
    parser.add_argument("--threads", type=int, default=2, help="the peer's torch threads")
    parser.add_argument("--ours-args", action="append",
                        help="extra options for a variant of ours (repeatable; '' = plain)")
    parser.add_argument("--ours-tree", type=Path, action="append",
                        help="a beam-i3d tree to run (repeatable; default: the one this "
                             "script is in)")
    parser.add_argument("--video", help="reuse this video instead of making one")
    parser.add_argument("--save-video", help="keep the video made here")
    opts = parser.parse_args(argv)

    seconds = opts.minutes * 60 if opts.minutes else opts.seconds
    width, height = (int(v) for v in opts.size.lower().split("x"))
    trees = [t.resolve() for t in opts.ours_tree or [ROOT]]
    variants = {}  # name -> (tree, extra options)
    for tree in trees:
        extra = opts.ours_args
        if extra is None:
            extra = (["--model-backend tf", "--model-backend openvino"]
                     if has_option(tree, "--model-backend") else [""])
        label = "ours" if len(trees) == 1 else f"ours {tree.name}"
        variants.update({f"{label} {e}".strip(): (tree, shlex.split(e)) for e in extra})
    become_subreaper()
    print(f"CPU: {cpu_name()}")
    print(f"ours: {', '.join(map(str, trees))} ({sys.executable}); peer: "
          f"{os.path.abspath(opts.peer_dir)} ({opts.peer_python})")
    with tempfile.TemporaryDirectory() as tmp:
        video = opts.video or opts.save_video or os.path.join(tmp, "video.mp4")
        if opts.video:
            import av

            with av.open(video) as container:
                frames = sum(1 for _ in container.decode(video=0))
        else:
            start = time.perf_counter()
            frames = make_video(video, seconds, width, height)
            print(f"made {video}: {width}x{height}, {frames} frames at {FPS} fps "
                  f"({time.perf_counter() - start:.0f} s to encode)")
        n, end_sec = same_windows(frames)
        print(f"windows: the peer makes {n} of {frames} frames; ours over the whole video "
              f"would make {ours_windows(frames)} (to the end, the last possibly shorter); "
              f"ours runs on [0, {end_sec:g}) s = the peer's {n}")
        results: dict[str, list[dict]] = {"peer": []}
        results.update({name: [] for name in variants})
        for run in range(opts.runs):
            for name in results:
                work = tempfile.mkdtemp(dir=tmp)
                if name == "peer":
                    r = time_peer(opts, video, work)
                    detail = (f"extract {r['extract_s']:.1f} s, forwards {r['forward_s']:.1f} s"
                              f" (CPU {r['forward_cpu_s']:.1f} s, {r['forward_calls']} calls), "
                              f"setup {r['setup_s']:.1f} s, torch {r['torch']}, "
                              f"{r['threads']} threads")
                else:
                    tree, extra = variants[name]
                    r = time_ours(tree, video, end_sec, work, extra)
                    detail = f"errors {r['errors']}"
                if r["orphans"]:
                    detail += f", {r['orphans']} descendants still running: CPU time partial"
                results[name].append(r)
                print(f"run {run + 1} {name:<40} {r['wall_s']:7.1f} s  CPU {r['cpu_s']:7.1f} s  "
                      f"windows {r['windows']}"
                      f"  load {r['load_before']:.1f} -> {r['load_after']:.1f}  {detail}",
                      flush=True)
        peer_wall = statistics.median(r["wall_s"] for r in results["peer"])
        peer_cpu = statistics.median(r["cpu_s"] for r in results["peer"])
        print(f"\nmedian of {opts.runs}, the whole command (ours / peer):")
        for name, runs in results.items():
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            windows = sorted({r["windows"] for r in runs})
            same = "same windows" if windows == [n] else f"WINDOWS DIFFER: {windows} vs {n}"
            print(f"  {name:<40} wall {wall:7.1f} s ({wall / peer_wall:.2f})  CPU {cpu:7.1f} s "
                  f"({cpu / peer_cpu:.2f})  {same}")
        extract = statistics.median(r["extract_s"] for r in results["peer"])
        forward = statistics.median(r["forward_s"] for r in results["peer"])
        forward_cpu = statistics.median(r["forward_cpu_s"] for r in results["peer"])
        print(f"  peer's extraction alone {extract:.1f} s, its forwards {forward:.1f} s "
              f"(CPU {forward_cpu:.1f} s)")


if __name__ == "__main__":
    main()
