"""``beam-i3d fvd`` reads its inputs in the decode pool's child processes, as ``score``
decodes: a file that crashes, hangs or exhausts its reader costs that row (an error row
naming it), never the job, and what comes back from a child equals reading in process."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from beam_i3d.cli import EXIT_OK, main
from beam_i3d.errors import TooFewFrames
from beam_i3d.fvd.clips import ClipSpec, count_frames, read_clip, read_protocol_clip
from beam_i3d.media.decode_pool import HOOK_ENV, DecodePool
from beam_i3d.media.recipe import DecodeLimits
from video_factory import write_video


def frames(t=12, h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    np.save(d / "a.npy", frames(seed=1))
    np.savez_compressed(d / "b.npz", x=frames(t=20, seed=2))
    png = d / "png"
    png.mkdir()
    for i, f in enumerate(frames(t=10, seed=3)):
        cv2.imwrite(str(png / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    write_video(str(d / "v.mkv"), list(frames(t=14, seed=4)), codec="ffv1", pix_fmt="bgr0")
    return {"npy": str(d / "a.npy"), "npz": str(d / "b.npz"), "png": str(png),
            "video": str(d / "v.mkv")}


def results_of(pool) -> dict:
    return {f.key: f.result for f in pool.results()}


@pytest.mark.parametrize("spec", [ClipSpec(frames=9),
                                  ClipSpec(frames=4, subsample=2, start="random", seed=7,
                                           resize="torch_linear")],
                         ids=["original", "styleganv_random"])
def test_a_child_reads_every_kind_of_input_exactly_as_in_process(inputs, spec):
    with DecodePool(2) as pool:
        for kind, uri in inputs.items():
            pool.submit_call(("count", kind), uri, count_frames, None)
        counts = results_of(pool)
        for kind, uri in inputs.items():
            pool.submit_call(("read", kind), uri, read_protocol_clip, spec,
                             counts[("count", kind)], f"key-{kind}", arrays=("rgb",))
        clips = results_of(pool)
    assert {k: counts[("count", k)] for k in inputs} == {"npy": 12, "npz": 20, "png": 10,
                                                         "video": 14}
    for kind, uri in inputs.items():
        want, start = read_clip(uri, spec, total=counts[("count", kind)], key=f"key-{kind}")
        got = clips[("read", kind)]
        assert got.start_frame == start, kind
        assert got.rgb.dtype == np.float32 and got.rgb.shape == (spec.frames, 224, 224, 3)
        np.testing.assert_array_equal(got.rgb, want)  # bit for bit
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"bi3d{os.getpid()}")]


def test_a_childs_errors_come_back_as_the_clips_errors(inputs):
    with DecodePool(1) as pool:
        pool.submit_call("short", inputs["npy"], read_protocol_clip, ClipSpec(frames=16),
                         arrays=("rgb",))
        pool.submit_call("missing", inputs["npy"] + ".gone.npy", count_frames, None)
        got = results_of(pool)
        with pytest.raises(ValueError, match="at most 4 arrays"):
            pool.submit_call("many", inputs["npy"], count_frames, None,
                             arrays=("a", "b", "c", "d", "e"))
    assert isinstance(got["short"], TooFewFrames)
    assert str(got["short"]) == f"{inputs['npy']}: has 12 frames; the protocol takes 16"
    assert type(got["missing"]).__name__ == "VideoNotFound"


@pytest.fixture
def fault_hook(monkeypatch):
    """Children started while this is set call decode_faults.inject(uri) first."""
    monkeypatch.setenv(HOOK_ENV, "decode_faults:inject")


def error_rows(out) -> dict:
    table = pd.concat(pd.read_parquet(out / "errors" / n)
                      for n in os.listdir(out / "errors") if n.endswith(".parquet"))
    return {os.path.basename(r.video_uri): r for r in table.itertuples()}


@pytest.mark.parametrize("protocol", ["original", "styleganv"])
def test_inputs_that_crash_hang_or_exhaust_their_reader_cost_one_row(
        tmp_path, fault_hook, protocol):
    # styleganv counts every clip's frames first (in a child too), then reads the chosen.
    good = [tmp_path / f"good{i}.npy" for i in range(2)]
    for i, path in enumerate(good):
        np.save(path, frames(t=16, h=32, w=32, seed=10 + i))
    bad = {"ABORT.npy": "DecoderCrashed", "HANG.npy": "DecodeTimeout",
           "HOG.npy": "DecodeOutOfMemory"}
    for name in bad:
        np.save(tmp_path / name, frames(t=16, h=32, w=32))
    rows = [str(p) for p in good] + [str(tmp_path / n) for n in bad]
    (tmp_path / "real.csv").write_text("video_uri\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    status = main(["fvd", "--real", str(tmp_path / "real.csv"), "--output", str(out),
                   "--protocol", protocol, "--frames", "16", "--decode-processes", "1",
                   "--decode-timeout", "2", "--decode-memory-mb", "1024"])
    assert status == EXIT_OK
    record = json.loads((out / "fvd.json").read_text())
    assert record["n_real"] == 2
    assert record["counts"]["real"]["error_types"] == {t: 1 for t in bad.values()}
    errors = error_rows(out)
    assert {name: errors[name].error_type for name in bad} == bad
    for name in bad:
        assert errors[name].message.startswith(str(tmp_path / name)), errors[name].message
        assert errors[name].stage == "decode"
