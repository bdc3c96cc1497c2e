"""Decode + resize + crop speed of beam-i3d's frame path, next to plain PyAV decoding.

Makes a 720p H.264 clip (25 fps, textured panning scene with sensor-like noise, crf 23),
then times, on the same clip in the same run (best of --repeats, the variants taking turns):

* decode only: PyAV decoding every frame (threads: FFmpeg's choice), nothing else;
* beam-i3d: ``beam_i3d.media.video.decode_clip`` -> ``[T,224,224,3]`` uint8 (the RGB stream);
* beam-i3d + gray: the same with the whole resized grayscale frames kept (flow stream);
* naive: decode, convert to RGB at 1280x720, ``cv2.resize`` to 455x256, crop;
* swscale at target: decode, ``to_ndarray(455x256, rgb24, BILINEAR)``, crop;

and the OpenCV DualTVL1 time per 256x340 frame pair. Then, on a shorter clip decoded
``--pool-clips`` times, clips/s of ``preprocess_clip`` (RGB stream) in this process
against :class:`beam_i3d.media.decode_pool.DecodePool` with 1 child and with one child per
CPU (children started and warmed before the clock; one FFmpeg thread per child, so the
in-process baseline of the 1-child ratio uses one thread too). Run from the repository
root:

    python benchmarks/decode_speed.py [--seconds 10] [--repeats 3] [--pool-clips 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_clip(path: str, seconds: float, width: int = 1280, height: int = 720) -> int:
    import av
    import cv2

    rng = np.random.default_rng(0)
    scene = rng.random((height + 400, width + 800, 3)).astype(np.float32)
    scene = cv2.GaussianBlur(scene, (0, 0), 2.0)
    scene = cv2.normalize(scene, None, 0, 255, cv2.NORM_MINMAX)
    count = int(seconds * 25)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for k in range(count):
            shift = np.float32([[1, 0, -2.7 * k], [0, 1, -1.3 * k]])
            image = cv2.warpAffine(scene, shift, (width, height))
            image += rng.normal(0, 3, image.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


def decode_loop(path: str, per_frame) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        for frame in container.decode(stream):
            per_frame(frame)
            count += 1
    return count


def best_rates(runs, repeats: int) -> list[float]:
    """Best frames/s of each run; the runs take turns, so that a change in the machine's
    load (shared cores) hits them all alike."""
    best = [0.0] * len(runs)
    for _ in range(repeats):
        for i, (_, fn) in enumerate(runs):
            t0 = time.perf_counter()
            frames = fn()
            best[i] = max(best[i], frames / (time.perf_counter() - t0))
    return best


def cpu_model() -> str:
    from beam_i3d.job.backends import cpu_name as name

    return name()


def pool_comparison(path: str, clips: int, repeats: int) -> None:
    """clips/s of the same ``clips`` decodes in process and through DecodePools."""
    from beam_i3d.media.decode_pool import DecodePool
    from beam_i3d.media.preprocess import preprocess_clip

    def in_process(threads: int):
        def run() -> int:
            for _ in range(clips):
                preprocess_clip(path, max_seconds=None, decode_threads=threads)
            return clips
        return run

    def through(pool):
        def run() -> int:
            for key in range(clips):
                pool.submit(key, path, max_seconds=None)
            for finished in pool.results():
                if isinstance(finished.result, BaseException):
                    raise finished.result
            return clips
        return run

    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    with DecodePool(1) as one, DecodePool(cpus) as many:
        through(one)()  # start and warm the children
        through(many)()
        print(f"pools started and warmed in {time.perf_counter() - t0:.1f} s")
        runs = [
            ("in process, 1 FFmpeg thread", in_process(1)),
            ("in process, FFmpeg's threads", in_process(0)),
            ("DecodePool, 1 child", through(one)),
            (f"DecodePool, {cpus} children", through(many)),
        ]
        rates = best_rates(runs, repeats)
    for (name, _), rate in zip(runs, rates):
        print(f"  {name:<48s} {rate:7.2f} clips/s  ({rate / rates[0]:.3f} x in process, 1 thread)")
    print(f"  pool overhead with 1 child: {(1 - rates[2] / rates[0]) * 100:+.1f}% clips/s "
          f"(target <= 5%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--flow-pairs", type=int, default=3, help="TV-L1 pairs to time")
    parser.add_argument("--pool-clips", type=int, default=8,
                        help="clips per DecodePool measurement (0: skip it)")
    parser.add_argument("--pool-seconds", type=float, default=2.0,
                        help="length of the DecodePool clip (default 2 s)")
    args = parser.parse_args()

    import av
    import cv2

    from beam_i3d.media.flow import compute_flow
    from beam_i3d.media.video import center_crop, decode_clip, resized_size

    print(f"PyAV {av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), "
          f"OpenCV {cv2.__version__}, {os.cpu_count()} CPUs ({cpu_model()})")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "720p.mp4")
        count = make_clip(path, args.seconds)
        mbps = os.path.getsize(path) * 8 / args.seconds / 1e6
        print(f"clip: 1280x720 H.264, 25 fps, {count} frames, {mbps:.1f} Mbit/s")
        size = resized_size(1280, 720)

        def naive(frame):
            rgb = frame.to_ndarray(format="rgb24")
            np.ascontiguousarray(center_crop(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)))

        def swscale_at_target(frame):
            rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="BILINEAR")
            np.ascontiguousarray(center_crop(rgb))

        runs = [
            ("decode only (PyAV)", lambda: decode_loop(path, lambda frame: None)),
            ("beam-i3d decode_clip -> [T,224,224,3] uint8",
             lambda: decode_clip(path, max_seconds=None).num_frames),
            ("beam-i3d decode_clip, + gray 455x256 for flow",
             lambda: decode_clip(path, max_seconds=None, keep_gray=True).num_frames),
            ("naive: RGB at 1280x720, cv2.resize, crop", lambda: decode_loop(path, naive)),
            ("swscale to 455x256 RGB (BILINEAR), crop", lambda: decode_loop(path, swscale_at_target)),
        ]
        results = list(zip([name for name, _ in runs], best_rates(runs, args.repeats)))
        base = results[0][1]
        for name, rate in results:
            print(f"  {name:<48s} {rate:7.0f} frames/s  ({rate / base:.2f} x decode only)")

        gray = decode_clip(path, max_seconds=(args.flow_pairs + 1) / 25, keep_gray=True).gray
        left = (gray.shape[2] - 340) // 2  # 256x455 -> the 256x340 of a 4:3 video
        gray = np.ascontiguousarray(gray[:, :, left:left + 340])
        t0 = time.perf_counter()
        compute_flow(gray, "opencv")
        per_pair = (time.perf_counter() - t0) / (gray.shape[0] - 1)
        print(f"  TV-L1 (OpenCV DualTVL1, default parameters), {gray.shape[1]}x{gray.shape[2]}: "
              f"{per_pair:.2f} s per frame pair ({gray.shape[0] - 1} pairs)")

        if args.pool_clips > 0:
            short = os.path.join(tmp, "720p-short.mp4")
            count = make_clip(short, args.pool_seconds)
            print(f"pool: {args.pool_clips} decodes of a 1280x720 H.264 clip of {count} frames, "
                  f"RGB stream")
            pool_comparison(short, args.pool_clips, args.repeats)


if __name__ == "__main__":
    main()
