"""I3D forward speed through the exported SavedModel, as a fraction of the machine's
fp32 matmul rate measured in the same run.

    python benchmarks/model_speed.py [--frames 64] [--repeats 5]

Prints seconds per forward for B=1, T frames, 224x224 RGB; GFLOP/s; and that rate as a
fraction of a 4096x4096 tf.matmul's. GFLOP/s use the project's reference figure for T=64,
209.8 GFLOP (a multiply-add as 2), scaled linearly for other T; the convolutions counted
from our architecture description come to 222.3 GFLOP at T=64 (TensorFlow's profiler
agrees), which would make every rate here 6% higher. Absolute times on shared machines
are noisy, the ratio less so.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.export import build_model, export_saved_model  # noqa: E402
from model.i3d import INCEPTION_CHANNELS, network_units  # noqa: E402


REFERENCE_GFLOP_T64 = 209.8


def i3d_flops(frames: int, size: int = 224, num_classes: int = 400) -> float:
    """Multiply-adds x 2 of the convolutions of one RGB I3D forward (pooling excluded)."""

    def ceil_div(a, b):
        return -(-a // b)

    t, s = ceil_div(frames, 2), ceil_div(size, 2)  # after Conv3d_1a_7x7 (stride 2)
    where = {"Conv3d_1a_7x7": (t, s)}
    s = ceil_div(s, 2)  # MaxPool3d_2a_3x3
    where["Conv3d_2b_1x1"] = where["Conv3d_2c_3x3"] = (t, s)
    s = ceil_div(s, 2)  # MaxPool3d_3a_3x3
    for module in INCEPTION_CHANNELS:
        if module == "Mixed_4b":  # MaxPool3d_4a_3x3 (stride 2 in time and space)
            t, s = ceil_div(t, 2), ceil_div(s, 2)
        if module == "Mixed_5b":  # MaxPool3d_5a_2x2
            t, s = ceil_div(t, 2), ceil_div(s, 2)
        where[module] = (t, s)
    where["Logits"] = (t - 1, s - 6)  # 2x7x7 VALID average pool
    total = 0
    for u in network_units(3, num_classes):
        tt, ss = where[u.name.split("/")[0]]
        total += 2 * tt * ss * ss * np.prod(u.kernel) * u.in_channels * u.out_channels
    return float(total)


def matmul_gflops(n: int = 4096, repeats: int = 10) -> float:
    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        c = mm(a, b)
    c.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def time_forward(fn, x, repeats: int) -> float:
    fn(x)  # warm up (and trace where needed)
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        np.asarray(out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    flops = REFERENCE_GFLOP_T64 * 1e9 * args.frames / 64
    model = build_model("default")
    x = tf.constant(np.random.default_rng(0).uniform(
        -1, 1, (1, args.frames, 224, 224, 3)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, tmp)
        loaded = tf.saved_model.load(tmp)
        serving = loaded.signatures["serving_default"]
        saved_s = time_forward(lambda v: serving(rgb=v)["logits"], x, args.repeats)
    module_s = time_forward(lambda v: model.predict({"rgb": v})["logits"], x, args.repeats)
    matmul = matmul_gflops()

    print(f"machine: {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"I3D RGB forward, B=1, T={args.frames}, 224x224: {flops / 1e9:.1f} GFLOP "
          f"(reference figure; convolutions counted here: {i3d_flops(args.frames) / 1e9:.1f})")
    print(f"fp32 matmul 4096x4096: {matmul:.0f} GFLOP/s")
    for name, seconds in (("SavedModel serving_default", saved_s),
                          ("in-process tf.function", module_s)):
        rate = flops / seconds / 1e9
        print(f"{name}: {seconds:.3f} s/forward, {rate:.0f} GFLOP/s, "
              f"{rate / matmul:.2f} of matmul")


if __name__ == "__main__":
    main()
