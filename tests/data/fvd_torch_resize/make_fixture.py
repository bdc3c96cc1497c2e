"""Writes ``cases.json`` beside this file: PyTorch's own output for the ``styleganv``
preprocessing (``x / 255 * 2 - 1`` of a uint8 tensor, then ``F.interpolate(...,
mode="trilinear", align_corners=False)`` to ``(T, H', W')``), as SHA-256 digests of the
float32 bytes, for ``tests/test_fvd_styleganv.py``.

Needs PyTorch, which the project does not depend on; run it in a separate venv:

    python -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 numpy
    /tmp/torchref/bin/python tests/data/fvd_torch_resize/make_fixture.py

The inputs are ``np.random.RandomState(seed).randint(0, 256, shape)`` as uint8
(RandomState's stream is frozen by NumPy's compatibility policy), so the test rebuilds
them instead of storing them.
"""

import hashlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

# (seed, [T, H, W, 3], (H', W')): downscales, upscales, non-integer ratios, one axis
# already at size, a 2x downscale, the sizes of common datasets.
CASES = [
    (1, [2, 240, 320, 3], [224, 224]),
    (2, [3, 64, 80, 3], [224, 224]),
    (3, [2, 300, 113, 3], [224, 224]),
    (4, [2, 37, 500, 3], [224, 224]),
    (5, [2, 224, 300, 3], [224, 224]),
    (6, [2, 448, 448, 3], [224, 224]),
    (7, [9, 128, 128, 3], [224, 224]),
    (8, [2, 256, 256, 3], [224, 224]),
    (9, [2, 11, 7, 3], [40, 50]),
    (10, [3, 37, 53, 3], [24, 31]),
]


def main():
    out = []
    for seed, shape, size in CASES:
        frames = np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)
        x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].contiguous()  # 1,C,T,H,W
        y = F.interpolate(x / 255 * 2 - 1, size=(shape[0], *size), mode="trilinear",
                          align_corners=False)
        y = np.ascontiguousarray(y[0].permute(1, 2, 3, 0).numpy(), np.float32)  # T,H,W,C
        out.append({"seed": seed, "shape": shape, "size": size,
                    "sha256": hashlib.sha256(y.tobytes()).hexdigest(),
                    "sum": float(y.astype(np.float64).sum())})
    record = {"torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cases": out}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
