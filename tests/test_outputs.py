"""Checks of the output location (beam_i3d.job.outputs), message by message, on local
paths and on GCS (the emulator of conftest.py)."""

from __future__ import annotations

import os

import pytest

from beam_i3d.errors import OutputError
from beam_i3d.job.outputs import PROBE_PREFIX, check_output_location, probe_remote_output


def refused(output, option="--output"):
    with pytest.raises(OutputError) as e:
        check_output_location(output, option)
    return str(e.value)


@pytest.mark.parametrize("output", [None, "", "  \t"])
def test_an_empty_output_is_refused(output):
    assert refused(output) == ("--output is empty (an unset variable in a script?); name "
                               "the directory to write to")
    assert refused(output, "--out").startswith("--out is empty")
    with pytest.raises(OutputError, match=r"^--output is empty \("):
        check_output_location(output)  # the option named by default


@pytest.mark.parametrize("output", [" /tmp/x", "/tmp/x ", "gs://b/r\n"])
def test_white_space_around_an_output_is_refused(output):
    assert refused(output) == f"--output {output!r} starts or ends with white space"


@pytest.mark.parametrize("output", ["/", "//", "file:///", "file:/"])
def test_the_root_of_the_file_system_is_refused(output):
    assert refused(output) == (f"--output {output} is the root of the file system; name a "
                               "directory for this run")


def test_a_file_uri_without_a_path_names_no_directory():
    assert refused("file://", "--out") == "--out file:// names no directory"


def test_local_outputs_that_are_or_lie_under_files(tmp_path):
    (tmp_path / "f").write_text("x")
    assert refused(str(tmp_path / "f")) == (
        f"--output {tmp_path / 'f'} is an existing file, not a directory")
    assert refused(str(tmp_path / "f" / "a" / "b")) == (
        f"--output {tmp_path / 'f' / 'a' / 'b'} cannot be created: {tmp_path / 'f'} is a file")


def test_local_outputs_where_no_directory_can_be_made():
    """/proc takes no new directory, even from root: the existing directory is named."""
    try:
        os.mkdir("/proc/beam-i3d-probe")
    except OSError as e:
        why = e.strerror
    else:  # pragma: no cover
        os.rmdir("/proc/beam-i3d-probe")
        pytest.skip("/proc takes directories here")
    assert refused("/proc") == f"--output /proc cannot be written: {why} (/proc)"
    assert refused("/proc/x/run", "--out") == f"--out /proc/x/run cannot be created: {why} (/proc)"


def test_usable_local_outputs_come_back_without_trailing_slashes(tmp_path, monkeypatch):
    assert check_output_location(str(tmp_path) + "//") == str(tmp_path)
    assert check_output_location(f"file://{tmp_path}/new/") == f"file://{tmp_path}/new"
    monkeypatch.chdir(tmp_path)
    assert check_output_location("rel/run/") == "rel/run"
    assert check_output_location("runX/") == "runX"  # only slashes are stripped
    assert os.listdir(tmp_path) == []  # the probe directory is gone, nothing was made


@pytest.mark.parametrize("output, message", [
    ("gs://b", "--output gs://b is the root of bucket gs://b; name a directory in it, "
               "e.g. gs://b/runs/NAME"),
    ("gs://b//", "--output gs://b// is the root of bucket gs://b; name a directory in it, "
                 "e.g. gs://b/runs/NAME"),
    ("gs://", "--output gs:// names no bucket"),
    ("gs:///runs", "--output gs:///runs names no bucket"),
    ("nosuch://b/runs", "--output nosuch://b/runs: no filesystem reads nosuch:// (use a "
                        "local path, file:// or gs://)"),
])
def test_unusable_remote_outputs(output, message):
    assert refused(output) == message


def test_usable_remote_outputs_come_back_without_trailing_slashes():
    assert check_output_location("gs://b/runs/r1//") == "gs://b/runs/r1"
    assert check_output_location("gs://b/X/") == "gs://b/X"  # only slashes are stripped
    assert check_output_location("gs://b/odd://name") == "gs://b/odd://name"


def test_probe_of_a_remote_output(gcs_emulator, tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    base = "gs://test-bucket/outputs-test"
    for name in ("a-file", "a-fileX", "run-old"):
        with FileSystems.create(f"{base}/{name}") as f:
            f.write(b"x")
    with pytest.raises(OutputError) as e:
        probe_remote_output(f"{base}/a-file", "--out")
    assert str(e.value) == f"--out {base}/a-file is an existing object (a file), not a directory"
    with pytest.raises(OutputError) as e:
        probe_remote_output(f"{base}/a-fileX")
    assert str(e.value) == (f"--output {base}/a-fileX is an existing object (a file), not "
                            "a directory")
    # An object whose name only starts with the output's is no obstacle; the probe
    # object is written under the output and deleted.
    probe_remote_output(f"{base}/run")
    left = sorted(m.path for m in FileSystems.match([f"{base}/**"])[0].metadata_list)
    assert left == [f"{base}/a-file", f"{base}/a-fileX", f"{base}/run-old"]
    # The probe is an object under the output, not a local file: it works from a
    # working directory that no longer exists.
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    probe_remote_output(f"{base}/run2")
    assert len(FileSystems.match([f"{base}/**"])[0].metadata_list) == 3
    assert PROBE_PREFIX == ".beam-i3d-write-probe-"
