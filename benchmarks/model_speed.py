"""I3D forward speed per model backend, as a fraction of the machine's fp32 matmul rate
measured in the same run.

    python benchmarks/model_speed.py [--backend tf openvino] [--precision f32 bf16]
        [--frames 16 64 250] [--batch 1 8] [--repeats 3] [--static] [--shapes-memory N]

Each backend is what ``score`` runs (:mod:`beam_i3d.job.backends`: TensorFlow's
``tf.function``; OpenVINO's CPU plugin, one compiled model with dynamic batch and frame
axes), fed uint8 RGB clips ``[B, T, 224, 224, 3]`` as the job feeds them. Shapes are
measured in turn for every backend, so the backends share the machine's load. Per
shape and backend: the first forward (a new shape) and the best of ``--repeats``
after it (the least disturbed by other load); GFLOP/s count the project's reference figure of 209.8 GFLOP for B=1, T=64 (a
multiply-add as 2), linear in B and T (the convolutions counted from our architecture
description come to 222.3 GFLOP at T=64, so every rate is 6% higher than printed).

The machine's fp32 rate is the best of three 4096x4096 matmuls: numpy's (OpenBLAS, in a
child process with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset, which can
force a slower kernel; the kernel it picked is printed, and the figure with the
environment as given too), ``tf.matmul``, and a MatMul compiled by OpenVINO (f32
forced). Each rate is given twice: by wall-clock time, and per CPU-second of this
process (all its threads), which other processes on a shared machine disturb less
(threads waiting for a descheduled partner still count, so it errs low). ``--static`` adds OpenVINO with a model compiled for each shape;
``--shapes-memory N`` runs OpenVINO on N frame counts from 9 up and prints the
resident memory after each (does it stay bounded?). Absolute times on shared machines
are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from beam_i3d.job import backends  # noqa: E402
from model.i3d import INCEPTION_CHANNELS, network_units  # noqa: E402

REFERENCE_GFLOP_T64 = 209.8
MATMUL_N = 4096
FLAG_NAMES = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"),
              ("amx_tile", "AMX"), ("amx_bf16", "AMX_BF16"))

_NUMPY_MATMUL = r"""
import ctypes, glob, json, os, resource, time
import numpy as np
n = %d
a = np.random.default_rng(0).random((n, n), dtype=np.float32)
b = np.random.default_rng(1).random((n, n), dtype=np.float32)
a @ b
best, best_cpu = 0.0, 0.0
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for _ in range(3):
    start, start_cpu = time.perf_counter(), cpu()
    a @ b
    best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    best_cpu = max(best_cpu, 2 * n**3 / (cpu() - start_cpu) / 1e9)
core = "unknown"
for lib in sorted(set(l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l)):
    so = ctypes.CDLL(lib)
    for fn in ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
               "openblas_get_corename"):
        if hasattr(so, fn):
            getattr(so, fn).restype = ctypes.c_char_p
            core = getattr(so, fn)().decode()
            break
print(json.dumps({"gflops": best, "cpu_gflops": best_cpu, "kernel": core}))
""" % MATMUL_N


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


def numpy_matmul(unset_openblas: bool) -> dict:
    """numpy's fp32 matmul in a child process: GFLOP/s (best of 3) and OpenBLAS's kernel."""
    env = dict(os.environ)
    if unset_openblas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", _NUMPY_MATMUL], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``fn()``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def tf_matmul(n: int = MATMUL_N, repeats: int = 5) -> tuple[float, float]:
    import tensorflow as tf

    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()  # warm up
    times = [timed(lambda: mm(a, b).numpy()) for _ in range(repeats)]
    return (2 * n**3 / min(w for w, _ in times) / 1e9,
            2 * n**3 / min(c for _, c in times) / 1e9)


def openvino_matmul(precision: str = "f32", n: int = MATMUL_N,
                    repeats: int = 5) -> tuple[float, float]:
    import openvino as ov
    from openvino import opset13 as ops

    a = ops.parameter([n, n], np.float32, name="a")
    b = ops.constant(np.random.default_rng(1).random((n, n), dtype=np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a], "matmul")
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": backends.worker_cpus(), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((n, n), dtype=np.float32)
    request.infer({0: x})
    times = [timed(lambda: request.infer({0: x}, share_inputs=True)) for _ in range(repeats)]
    return (2 * n**3 / min(w for w, _ in times) / 1e9,
            2 * n**3 / min(c for _, c in times) / 1e9)


class StaticOpenVINO:
    """OpenVINO with a model compiled for each shape (``--static``; for comparison)."""

    name, precision = "openvino-static", "f32"

    def __init__(self, model, precision: str):
        import openvino as ov

        self.core = ov.Core()
        self.model = backends.read_openvino_model(model, self.core)
        self.precision = precision
        self.compiled = {}

    def score(self, inputs):
        from beam_i3d.media.preprocess import uint8_to_unit_range

        x = uint8_to_unit_range(inputs["rgb"])
        if x.shape not in self.compiled:
            m = self.model.clone()
            m.reshape({"rgb": list(x.shape)})
            self.compiled[x.shape] = self.core.compile_model(m, "CPU", {
                "INFERENCE_PRECISION_HINT": self.precision,
                "INFERENCE_NUM_THREADS": backends.worker_cpus(),
                "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        return self.compiled[x.shape].infer({"rgb": x})


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", choices=["tf", "openvino"],
                        default=["tf", "openvino"])
    parser.add_argument("--precision", nargs="+", choices=list(backends.PRECISIONS),
                        default=["f32"])
    parser.add_argument("--frames", nargs="+", type=int, default=[64])
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--static", action="store_true",
                        help="also OpenVINO compiled for each shape")
    parser.add_argument("--shapes-memory", type=int, default=0, metavar="N")
    args = parser.parse_args()

    from beam_i3d.job.inference import configure_tensorflow
    from model.export import build_model

    flags = backends.cpu_flags()
    print(f"CPU: {backends.cpu_name()}, {backends.worker_cpus()} CPUs for this process; "
          + ", ".join(f"{label} {'yes' if flag in flags else 'no'}"
                      for flag, label in FLAG_NAMES))
    given = numpy_matmul(unset_openblas=False)
    unset = numpy_matmul(unset_openblas=True)
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
           if k in os.environ}
    print(f"numpy matmul {MATMUL_N}: {unset['gflops']:.0f} GFLOP/s (OPENBLAS_CORETYPE/"
          f"L2_SIZE unset, kernel {unset['kernel']}); with the environment as given "
          f"{env or '(none set)'}: {given['gflops']:.0f} GFLOP/s (kernel {given['kernel']})")
    configure_tensorflow()
    machine = {"numpy": (unset["gflops"], unset["cpu_gflops"])}
    if "tf" in args.backend:
        import tensorflow as tf

        machine["tf.matmul"] = tf_matmul()
        print(f"tf.matmul {MATMUL_N}: {machine['tf.matmul'][0]:.0f} GFLOP/s, "
              f"{machine['tf.matmul'][1]:.0f} per CPU-second (TensorFlow {tf.__version__}, "
              f"GPUs: {len(tf.config.list_physical_devices('GPU'))})")
    if "openvino" in args.backend:
        import openvino as ov

        machine["openvino MatMul"] = openvino_matmul("f32")
        print(f"OpenVINO {ov.get_version()} MatMul {MATMUL_N} f32: "
              f"{machine['openvino MatMul'][0]:.0f} GFLOP/s, "
              f"{machine['openvino MatMul'][1]:.0f} per CPU-second")
        if "bf16" in args.precision and backends.cpu_has_bf16():
            bf16 = openvino_matmul("bf16")
            print(f"OpenVINO MatMul {MATMUL_N} bf16 (not counted as fp32): "
                  f"{bf16[0]:.0f} GFLOP/s, {bf16[1]:.0f} per CPU-second")
    best_name = max(machine, key=lambda k: machine[k][0])
    fp32 = machine[best_name][0]
    best_cpu_name = max(machine, key=lambda k: machine[k][1])
    fp32_cpu = machine[best_cpu_name][1]
    print(f"machine fp32 matmul: {fp32:.0f} GFLOP/s ({best_name}); {fp32_cpu:.0f} GFLOP "
          f"per CPU-second ({best_cpu_name})")

    model = build_model("default")
    runners = []
    for name in args.backend:
        for precision in args.precision:
            if backends.conflicting_options(name, precision, False):
                continue
            if precision == "bf16" and not backends.cpu_has_bf16():
                print(f"skipped {name} bf16: this CPU has no bf16")
                continue
            start = time.perf_counter()
            runner = (backends.TFBackend(model) if name == "tf"
                      else backends.OpenVINOBackend(model, precision))
            print(f"loaded {runner.describe()} in {time.perf_counter() - start:.1f} s")
            runners.append(runner)
            if args.static and name == "openvino":
                runners.append(StaticOpenVINO(model, precision))

    rng = np.random.default_rng(0)
    print("\n| backend | precision | B | T | first forward (s) | forward (s) | GFLOP/s | "
          "of fp32 matmul | CPU-s | GFLOP per CPU-s | of matmul's per CPU-s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for frames in args.frames:
        for batch in args.batch:
            x = rng.integers(0, 256, (batch, frames, 224, 224, 3), dtype=np.uint8)
            flops = REFERENCE_GFLOP_T64 * 1e9 * batch * frames / 64
            for runner in runners:
                first, _ = timed(lambda: runner.score({"rgb": x}))
                times = [timed(lambda: runner.score({"rgb": x}))
                         for _ in range(args.repeats)]
                seconds = min(w for w, _ in times)  # the least disturbed by other load
                cpu = min(c for _, c in times)
                rate, cpu_rate = flops / seconds / 1e9, flops / cpu / 1e9
                print(f"| {runner.name} | {runner.precision} | {batch} | {frames} | "
                      f"{first:.2f} | {seconds:.3f} | {rate:.0f} | {rate / fp32:.2f} | "
                      f"{cpu:.2f} | {cpu_rate:.0f} | {cpu_rate / fp32_cpu:.2f} |", flush=True)
    if args.shapes_memory:
        runner = next(r for r in runners if r.name == "openvino")
        print(f"\nOpenVINO ({runner.precision}), B=1, {args.shapes_memory} frame counts "
              f"from 9: resident memory after each (MB)")
        marks = []
        for frames in range(9, 9 + args.shapes_memory):
            x = rng.integers(0, 256, (1, frames, 224, 224, 3), dtype=np.uint8)
            runner.score({"rgb": x})
            marks.append(f"T={frames}: {rss_mb():.0f}")
        print(", ".join(marks))


if __name__ == "__main__":
    main()
