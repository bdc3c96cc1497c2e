"""The DirectRunner job against a plain Python loop doing the same work, in one run.

    python benchmarks/pipeline_speed.py [--clips 48] [--seconds 4] [--workers 2]

Makes N H.264 clips (340x256, 25 fps, textured motion) in a temp dir, then times
1. a plain loop: for each clip, ``preprocess_clip`` (decode + resize + crop to uint8) and
   one I3D forward of the default RGB model, batch of one, model loaded once;
2. ``beam-i3d score`` on a manifest of the same clips, DirectRunner with
   ``--direct_num_workers W --direct_running_mode multi_processing`` (a subprocess, as a
   user runs it; its time includes Beam's start-up and each worker's model load).
Prints clips/s of both and the ratio job time / loop time (target: at most 1.15), and
the job's time on a 1-clip manifest, which is nearly all fixed start-up cost.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def make_clips(directory: str, count: int, seconds: float) -> list[str]:
    import av

    paths = []
    frames = int(seconds * 25)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = os.path.join(directory, f"clip{i:03d}.mp4")
        texture = rng.integers(0, 256, (256 // 4, (340 + 3 * frames) // 4, 3), np.uint8)
        texture = np.repeat(np.repeat(texture, 4, axis=0), 4, axis=1)
        with av.open(path, "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
            for k in range(frames):
                image = np.ascontiguousarray(texture[:, 3 * k:3 * k + 340])
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, "rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths.append(path)
    return paths


def time_loop(paths: list[str]) -> float:
    from beam_i3d.media.preprocess import preprocess_clip
    from model.export import build_model

    model = build_model("default")
    model.predict_uint8({"rgb": np.zeros((1, 9, 224, 224, 3), np.uint8)})  # trace once
    start = time.perf_counter()
    for path in paths:
        clip = preprocess_clip(path)
        out = model.predict_uint8({"rgb": clip.rgb[None]})
        out["logits"].numpy()
    return time.perf_counter() - start


def time_job(paths: list[str], directory: str, workers: int, name: str = "all") -> float:
    manifest = os.path.join(directory, f"manifest_{name}.csv")
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_uri"])
        writer.writerows([p] for p in paths)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_i3d", "score", "--manifest", manifest,
                    "--output", os.path.join(directory, f"out_{name}"), "--quiet",
                    "--model-backend", "tf",  # the loop's backend: the job's overhead only
                    "--direct_num_workers", str(workers),
                    "--direct_running_mode", "multi_processing"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(tmp, args.clips, args.seconds)
        loop = time_loop(paths)
        job = time_job(paths, tmp, args.workers)
        one = time_job(paths[:1], tmp, args.workers, name="one")
    n = args.clips
    print(f"machine: {os.cpu_count()} CPUs; {n} clips of {args.seconds:g} s, 340x256, 25 fps")
    print(f"plain loop (decode + I3D, model loaded once): {loop:.1f} s, {n / loop:.2f} clips/s")
    print(f"beam-i3d score, DirectRunner multi_processing x{args.workers}: {job:.1f} s, "
          f"{n / job:.2f} clips/s (start-up and model loads included)")
    print(f"job / loop time: {job / loop:.2f} (target <= 1.15)")
    print(f"the same job on 1 clip: {one:.1f} s (mostly fixed start-up: Python, Beam, "
          f"TensorFlow and the model in each worker)")


if __name__ == "__main__":
    main()
