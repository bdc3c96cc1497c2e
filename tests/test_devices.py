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
