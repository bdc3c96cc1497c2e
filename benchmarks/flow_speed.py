"""TV-L1 optical flow speed: the TensorFlow port (beam_i3d.media.flow_tf) against OpenCV's
DualTVL1, on the same frame pairs, in the same run.

    python benchmarks/flow_speed.py [--pairs 64] [--opencv-pairs 8] [--batch-pairs 64 8 2]

Frame pairs are consecutive frames of the bundled sample clip, resized to 256x340 (the
recipe's 256 short side at 4:3). OpenCV (default parameters, its default thread count)
runs on the first ``--opencv-pairs`` pairs only, to save time; its figure is seconds
per pair. The TF backend runs all ``--pairs`` pairs, without XLA (one graph call of all
pairs) and with XLA (jit_compile=True) once per ``--batch-pairs`` chunk size; the
one-off XLA compilation is timed separately and not counted. Also prints the agreement
of the two backends on the OpenCV pairs (median end-point error, correlation). Times
on shared machines are noisy: each figure is the best of ``--repeats`` runs, OpenCV is
timed before and after the TF runs, and ratios use its better time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from beam_i3d.media.flow_tf import tvl1_flow_tf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "v_CricketShot_g04_c01_rgb.gif"


def sample_pairs(n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` consecutive-frame pairs of the sample clip, gray uint8 [n, height, width]."""
    gif = Image.open(SAMPLE)
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        rgb = np.asarray(gif.convert("RGB"))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        frames.append(cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR))
    # Walk the clip forwards and back so any n gives consecutive, distinct pairs.
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    idx = [order[k % len(order)] for k in range(n + 1)]
    prev = np.stack([frames[idx[k]] for k in range(n)])
    nxt = np.stack([frames[idx[k + 1]] for k in range(n)])
    return prev, nxt


def cpu_name() -> str:
    from beam_i3d.job.backends import cpu_name as name

    return name()


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--opencv-pairs", type=int, default=8)
    parser.add_argument("--batch-pairs", type=int, nargs="+", default=[64, 8, 2],
                        help="chunk sizes to time with XLA")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-eager-graph", action="store_true",
                        help="skip the run without XLA")
    args = parser.parse_args()

    prev, nxt = sample_pairs(args.pairs, args.height, args.width)
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                 for g in gpus]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; GPUs: {gpu_names or 'none'}; "
          f"TensorFlow {tf.__version__}, OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads)")
    print(f"frames: {args.pairs} pairs of {args.height}x{args.width} uint8, sample clip")

    k = min(args.opencv_pairs, args.pairs)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()

    def run_opencv():
        return np.stack([tvl1.calc(prev[i], nxt[i], None) for i in range(k)])

    cv_s, cv_flow = best_time(run_opencv, args.repeats)
    cv_per_pair = cv_s / k
    print(f"opencv DualTVL1 (CPU, {k} pairs): {cv_per_pair:.3f} s/pair, "
          f"{1 / cv_per_pair:.2f} pairs/s")

    rows = []
    if not args.no_eager_graph:
        start = time.perf_counter()
        tvl1_flow_tf(prev[:1], nxt[:1], jit_compile=False)  # trace once
        trace_s = time.perf_counter() - start
        s, flow = best_time(lambda: tvl1_flow_tf(prev, nxt, jit_compile=False),
                            args.repeats)
        rows.append((f"tf, no XLA, batch {args.pairs}", s, trace_s, flow))
    for bp in args.batch_pairs:
        bp = min(bp, args.pairs)
        start = time.perf_counter()
        tvl1_flow_tf(prev[:bp], nxt[:bp], batch_pairs=bp, jit_compile=True)  # compile
        compile_s = time.perf_counter() - start
        s, flow = best_time(
            lambda: tvl1_flow_tf(prev, nxt, batch_pairs=bp, jit_compile=True),
            args.repeats)
        rows.append((f"tf, XLA, batch_pairs {bp}", s, compile_s, flow))

    # OpenCV again after the TF runs: on a shared machine the load may have changed.
    cv_after_s, _ = best_time(run_opencv, args.repeats)
    print(f"opencv DualTVL1 again, after the tf runs: {cv_after_s / k:.3f} s/pair")
    cv_per_pair = min(cv_per_pair, cv_after_s / k)

    for name, s, once_s, flow in rows:
        per_pair = s / args.pairs
        diff = flow[:k] - cv_flow
        epe = np.sqrt((diff ** 2).sum(-1)).reshape(k, -1)
        corr = min(np.corrcoef(flow[i, ..., c].ravel(), cv_flow[i, ..., c].ravel())[0, 1]
                   for i in range(k) for c in range(2))
        print(f"{name}: {per_pair:.3f} s/pair, {1 / per_pair:.2f} pairs/s, "
              f"{cv_per_pair / per_pair:.2f}x OpenCV (first call +{once_s:.1f} s); "
              f"vs OpenCV: median EPE {np.median(epe, axis=1).max():.4f} px (worst pair), "
              f"min correlation {corr:.4f}")


if __name__ == "__main__":
    main()
