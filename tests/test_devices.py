"""One model per GPU: loading processes claim distinct devices (made-up device lists:
no GPU here), a dead process's device is free again, extra processes share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from beam_i3d.job.devices import claim_device, release_devices

ROOT = Path(__file__).parent.parent
DEVICES = ["/GPU:0", "/GPU:1"]
CLAIM = ("import sys; from beam_i3d.job.devices import claim_device; "
         "print(claim_device(sys.argv[1].split(','), sys.argv[2]), flush=True); "
         "sys.stdin.read()")  # holds its claim until its stdin closes


def start_claimer(lock_dir) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", CLAIM, ",".join(DEVICES), str(lock_dir)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return p, p.stdout.readline().strip()


def test_one_device_or_none_is_left_to_the_framework(tmp_path):
    assert claim_device([], str(tmp_path)) is None
    assert claim_device(["/GPU:0"], str(tmp_path)) is None


def test_processes_take_distinct_devices_and_a_dead_ones_is_free_again(tmp_path):
    first, a = start_claimer(tmp_path)
    second, b = start_claimer(tmp_path)
    try:
        assert {a, b} == set(DEVICES)
        third, c = start_claimer(tmp_path)  # all held: shares one
        assert c in DEVICES
        third.kill()
        third.wait()
        first.kill()  # dies without releasing: the kernel drops its lock
        first.wait()
        again, d = start_claimer(tmp_path)
        assert d == a
        again.kill()
        again.wait()
    finally:
        for p in (first, second):
            p.kill()
            p.wait()


def test_a_process_keeps_its_claim(tmp_path):
    try:
        device = claim_device(DEVICES, str(tmp_path))
        assert device == "/GPU:0"
        assert claim_device(DEVICES, str(tmp_path)) == device
        other, taken = start_claimer(tmp_path)
        assert taken == "/GPU:1"
        other.kill()
        other.wait()
    finally:
        release_devices()


def test_a_model_on_a_machine_of_several_gpus_takes_one_and_scores(monkeypatch, tmp_path):
    """ClipScorer with two made-up GPUs: it claims one, builds and runs there (soft
    placement falls back to the CPU here), and scores as a model placed by TensorFlow."""
    import collections

    import numpy as np
    import tensorflow as tf

    from beam_i3d.job import devices
    from beam_i3d.job.inference import ClipScorer

    Device = collections.namedtuple("Device", "name device_type")
    fake = [Device("/device:GPU:0", "GPU"), Device("/device:GPU:1", "GPU")]
    real_list = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: fake if kind == "GPU" else real_list(kind))
    monkeypatch.setattr(devices.tempfile, "gettempdir", lambda: str(tmp_path))
    try:
        placed = ClipScorer("default", None, model_backend="tf")
        assert placed._device == "/device:GPU:0"
        assert (tmp_path / "beam-i3d-gpu-0.lock").exists()
    finally:
        release_devices()
    monkeypatch.setattr(tf.config, "list_logical_devices", real_list)
    plain = ClipScorer("default", None, model_backend="tf")
    assert plain._device is None
    clip = np.random.default_rng(0).integers(0, 256, (1, 16, 224, 224, 3), np.uint8)
    a, b = placed.score({"rgb": clip}), plain.score({"rgb": clip})
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)
