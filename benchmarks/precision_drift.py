"""How far ``--precision bf16`` (OpenVINO) moves I3D's outputs from float32, on clips
decoded as ``score`` decodes them.

    python benchmarks/precision_drift.py [--fvd]

Clips: the bundled sample video (real footage: the whole clip, temporal crops, its
mirror image and its time reversal) and generated videos encoded with H.264 (panning
textures, noise, gradients; tests/video_factory.py). For each: f32's top-1 and its
margin over the second logit, whether bf16 keeps the top-1, max |d logit| and max |d
embedding| against f32 (OpenVINO f32, itself within 1e-4 of TensorFlow). ``--fvd``
adds the black/white FVD anchor (30-frame all-black vs all-white clips, published
151.39244) through f32 and bf16 ``beam-i3d fvd`` runs. Needs a CPU with AVX512_BF16 or
AMX.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402

from beam_i3d.job import backends  # noqa: E402

SAMPLE = os.path.join(ROOT, "beam_i3d", "data", "samples", "v_CricketShot_g04_c01.mp4")


def generated_videos(directory: str) -> dict[str, str]:
    """A few H.264 videos of 48 frames, 25 fps, 320x240."""
    from video_factory import write_video

    h, w, n = 240, 320, 48
    rng = np.random.default_rng(0)
    wide = (rng.random((h, w + 2 * n, 3)) * 255).astype(np.uint8)
    smooth = np.cumsum(rng.normal(0, 6, (h, w + 4 * n, 3)), axis=1)
    smooth = np.clip(smooth - smooth.min(axis=1, keepdims=True), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    makers = {
        "noise_pan": lambda k: wide[:, 2 * k:2 * k + w],
        "smooth_pan": lambda k: smooth[:, 4 * k:4 * k + w],
        "noise_static": lambda k: wide[:, :w],
        "gradient_cycle": lambda k: np.stack([(xx + 5 * k) % 256, (yy + 3 * k) % 256,
                                              (xx + yy) % 256], -1).astype(np.uint8),
        "flicker": lambda k: np.full((h, w, 3), 40 + 170 * (k % 2), np.uint8),
        "moving_square": lambda k: np.where(
            ((xx - 4 * k) % w < 60)[..., None] & (np.abs(yy - 120) < 30)[..., None],
            np.uint8(230), np.uint8(20)).repeat(3, -1),
    }
    out = {}
    for name, make in makers.items():
        out[name] = write_video(os.path.join(directory, f"{name}.mp4"), make, num_frames=n)
    return out


def clips(directory: str) -> dict[str, np.ndarray]:
    """name -> uint8 [T, 224, 224, 3], decoded and preprocessed as score does."""
    from beam_i3d.media.preprocess import preprocess_clip

    sample = preprocess_clip(SAMPLE).rgb  # 79 frames
    found = {"sample": sample, "sample_0-16": sample[:16], "sample_20-52": sample[20:52],
             "sample_40-79": sample[40:], "sample_mirrored": sample[:, :, ::-1],
             "sample_reversed": sample[::-1]}
    for name, uri in generated_videos(directory).items():
        found[name] = preprocess_clip(uri).rgb
    return found


def fvd_anchor(directory: str, precision: str) -> float:
    import json

    from beam_i3d.cli import main

    root = os.path.join(directory, "fvd")
    os.makedirs(root, exist_ok=True)
    for name, value in (("black", 0), ("white", 255)):
        for i in range(2):
            np.save(os.path.join(root, f"{name}{i}.npy"),
                    np.full((30, 224, 224, 3), value, np.uint8))
        with open(os.path.join(root, f"{name}.csv"), "w") as f:
            f.write("video_uri\n" + "".join(f"{root}/{name}{i}.npy\n" for i in range(2)))
    out = os.path.join(root, f"out_{precision}")
    argv = ["fvd", "--real", os.path.join(root, "black.csv"), "--fake",
            os.path.join(root, "white.csv"), "--output", out, "--frames", "30",
            "--model-backend", "openvino", "--precision", precision]
    if precision != "f32":
        argv.append("--nonstandard")
    assert main(argv) == 0
    with open(os.path.join(out, "fvd.json")) as f:
        return json.load(f)["fvd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fvd", action="store_true", help="also the FVD anchor")
    args = parser.parse_args()
    from model.export import build_model

    print(f"CPU: {backends.cpu_name()}; bf16: {backends.cpu_has_bf16()}")
    model = build_model("default")
    labels = model.labels
    f32 = backends.OpenVINOBackend(model, "f32")
    bf16 = backends.OpenVINOBackend(model, "bf16")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| clip | T | f32 top-1 (margin) | bf16 top-1 same | max abs d logit | "
              "max abs d embedding |")
        print("| --- | ---: | --- | --- | ---: | ---: |")
        worst_logit, worst_embedding, same = 0.0, 0.0, 0
        found = clips(tmp)
        for name, rgb in found.items():
            a = f32.score({"rgb": rgb[None]})
            b = bf16.score({"rgb": rgb[None]})
            logits = a["logits"][0]
            first, second = np.sort(logits)[::-1][:2]
            d_logit = float(np.abs(a["logits"] - b["logits"]).max())
            d_embedding = float(np.abs(a["rgb_embedding"] - b["rgb_embedding"]).max())
            kept = int(logits.argmax()) == int(b["logits"][0].argmax())
            same += kept
            worst_logit, worst_embedding = max(worst_logit, d_logit), max(worst_embedding,
                                                                           d_embedding)
            print(f"| {name} | {len(rgb)} | {labels[int(logits.argmax())]} "
                  f"({first - second:.2f}) | {'yes' if kept else 'NO'} | {d_logit:.3f} | "
                  f"{d_embedding:.4f} |", flush=True)
        print(f"\ntop-1 kept on {same} of {len(found)} clips; worst max |d logit| "
              f"{worst_logit:.3f}, worst max |d embedding| {worst_embedding:.4f}")
        if args.fvd:
            for precision in ("f32", "bf16"):
                print(f"black/white FVD, openvino {precision}: "
                      f"{fvd_anchor(tmp, precision):.4f} (published 151.39244)", flush=True)


if __name__ == "__main__":
    main()
