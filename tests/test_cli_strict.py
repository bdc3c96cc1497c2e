"""A command that refuses to guess: unknown options, unusable outputs, bad manifests and
unreachable storage are one line on stderr and a non-zero exit status, before any work."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_i3d import cli
from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_USAGE, main
from beam_i3d.errors import OutputError, StorageUnreachable

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"


def usage_error(capsys, argv) -> str:
    """Run the command, expecting a usage error: exit status 2 and one line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(f"video_uri\n{SAMPLE}\n")
    return str(path)


# --- 1. Unknown options ---------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["--max-secnds", "5"], "unknown option --max-secnds (did you mean --max-seconds?)"),
    (["--skip_existing"], "unknown option --skip_existing (did you mean --skip-existing?)"),
    (["--topk", "3"], "unknown option --topk (did you mean --top-k?)"),
    (["--top", "3"], "unknown option --top (did you mean --top-k?)"),  # no abbreviations
    (["--max-secnds=5"], "unknown option --max-secnds (did you mean --max-seconds?)"),
    (["--direct-num-workers", "2"],
     "unknown option --direct-num-workers (did you mean --direct_num_workers?)"),
    (["--runner", "DirectRunner", "stray"], "unexpected argument 'stray'"),
])
def test_unknown_options_name_the_closest(capsys, args, expected):
    err = usage_error(capsys, ["score", "--manifest", "m.csv", "--output", "o", *args])
    assert err == f"beam-i3d score: error: {expected}"


def test_unknown_option_without_a_close_one(capsys):
    err = usage_error(capsys, ["score", "--manifest", "m.csv", "--output", "o",
                               "--frobnicate", "2"])
    assert err.startswith("beam-i3d score: error: unknown option --frobnicate")


@pytest.mark.parametrize("argv, expected", [
    (["preprocess", "v.mp4", "--out", "p", "--max-secnds", "3"],
     "beam-i3d preprocess: error: unknown option --max-secnds (did you mean --max-seconds?)"),
    (["export", "--out", "d", "--rgb-chekpoint", "default"],
     "beam-i3d export: error: unknown option --rgb-chekpoint (did you mean --rgb-checkpoint?)"),
    (["report", "d", "--outt", "x"],
     "beam-i3d report: error: unknown option --outt (did you mean --out?)"),
    # Beam's options are score's only.
    (["preprocess", "v.mp4", "--out", "p", "--runner", "DirectRunner"],
     "beam-i3d preprocess: error: unknown option --runner"),
])
def test_every_subcommand_suggests(capsys, argv, expected):
    assert usage_error(capsys, argv).startswith(expected)


def test_unknown_option_fails_before_tensorflow_or_work():
    code = ("import sys\nfrom beam_i3d.cli import main\n"
            "try:\n    main(['score', '--manifest', 'nothing.csv', '--output', 'o', "
            "'--max-secnds', '5'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.strip() == ("beam-i3d score: error: unknown option --max-secnds "
                                   "(did you mean --max-seconds?)")


def test_beam_options_pass_through():
    parser = cli.build_parser().subcommand_parsers["score"]
    ours, beam = cli.option_names(parser), cli.beam_option_parser()
    fine = ["--runner", "DirectRunner", "--direct_num_workers=2", "--save_main_session",
            "--streaming", "--experiments", "a", "--experiment=b", "--machine_type", "n1",
            "--worker_machine_type=n2", "--job-server-timeout", "5", "--job_server_timeout=6",
            "--num_workers", "-3", "--labels", "k=v", "--direct_running_mode",
            "multi_processing"]
    assert cli.unknown_argument_error(fine, ours, beam) is None
    # A Beam option with a bad value: Beam's own message, one line.
    assert "invalid choice" in cli.unknown_argument_error(
        ["--direct_running_mode", "bogus"], ours, beam)
    assert "ignored explicit argument" in cli.unknown_argument_error(
        ["--save_main_session=yes"], ours, beam)


def test_dry_run_accepts_beam_options(manifest, tmp_path, capsys):
    assert main(["score", "--manifest", manifest, "--output", str(tmp_path / "o"),
                 "--dry-run", "--direct_num_workers=2", "--direct_running_mode",
                 "multi_threading", "--save_main_session"]) == 0
    assert "dry run: options valid" in capsys.readouterr().err


# --- 2. Output locations --------------------------------------------------------------


@pytest.mark.parametrize("output, message", [
    ("", "--output is empty (an unset variable in a script?)"),
    ("   ", "--output is empty"),
    ("/", "--output / is the root of the file system"),
    ("file:///", "--output file:/// is the root of the file system"),
    ("gs://bucket", "--output gs://bucket is the root of bucket gs://bucket"),
    ("gs://bucket/", "--output gs://bucket/ is the root of bucket gs://bucket"),
    ("gs:///runs", "--output gs:///runs names no bucket"),
    ("nosuchscheme://b/runs", "no filesystem reads nosuchscheme://"),
])
def test_unusable_outputs_are_refused(output, message):
    from beam_i3d.job.outputs import check_output_location

    with pytest.raises(OutputError) as e:
        check_output_location(output)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_usable_outputs(tmp_path):
    from beam_i3d.job.outputs import check_output_location

    assert check_output_location(str(tmp_path / "new" / "run") + "/") == str(
        tmp_path / "new" / "run")
    assert check_output_location(str(tmp_path)) == str(tmp_path)
    assert check_output_location("gs://b/runs/r1/") == "gs://b/runs/r1"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert os.listdir(tmp_path) == []


def test_local_outputs_that_cannot_be_used(tmp_path):
    from beam_i3d.job.outputs import check_output_location

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a directory"):
        check_output_location(str(tmp_path / "file"))
    with pytest.raises(OutputError, match=r"cannot be created: .*/file is a file"):
        check_output_location(str(tmp_path / "file" / "run"))
    # /proc takes no new directories, even from root.
    with pytest.raises(OutputError, match="cannot be created"):
        check_output_location("/proc/beam-i3d-test/run")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="cannot be written"):
            check_output_location(str(locked))
        with pytest.raises(OutputError, match="cannot be created"):
            check_output_location(str(locked / "run"))


@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_output_is_one_line_and_exit_3_even_in_a_dry_run(manifest, tmp_path, capsys,
                                                             dry_run):
    (tmp_path / "file").write_text("x")
    for output in ("", str(tmp_path / "file"), "/"):
        argv = ["score", "--manifest", manifest, "--output", output]
        assert main(argv + (["--dry-run"] if dry_run else [])) == EXIT_CONFIGURATION
        assert one_line(capsys).startswith("beam-i3d score: error: --output")


# --- 3. Shared options, validated once ------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("--max-seconds", "0"), ("--max-seconds", "-1"), ("--max-seconds", "inf"),
    ("--max-seconds", "nan"), ("--flow-batch-pairs", "0"), ("--flow-batch-pairs", "1.5"),
    ("--max-pixels", "0"), ("--max-duration", "0"), ("--decode-timeout", "-5"),
    ("--max-aspect-ratio", "0.5"), ("--decode-memory-mb", "0"), ("--streams", "depth"),
    ("--flow-backend", "cuda"),
])
def test_score_and_preprocess_validate_the_same(capsys, option, value):
    errors = []
    for argv in (["score", "--manifest", "m.csv", "--output", "o"],
                 ["preprocess", "v.mp4", "--out", "p"]):
        errors.append(usage_error(capsys, [*argv, option, value]))
    assert errors[0].replace("score", "X") == errors[1].replace("preprocess", "X")
    assert option in errors[0]


@pytest.mark.parametrize("value, message", [
    ("1.5", "must be between 0 and 1, got 1.5"), ("-0.1", "must be between 0 and 1"),
    ("nan", "must be between 0 and 1, got nan"), ("half", "expected a number, got 'half'")])
def test_score_and_fvd_read_a_rate_the_same(capsys, value, message):
    errors = [usage_error(capsys, [*argv, "--max-error-rate", value]) for argv in (
        ["score", "--manifest", "m.csv", "--output", "o"],
        ["fvd", "--real", "m.csv", "--output", "o"])]
    assert errors[0].replace("score", "X") == errors[1].replace("fvd", "X")
    assert "--max-error-rate" in errors[0] and message in errors[0]


def test_decode_limits_and_processes_reach_score_options(tmp_path):
    from beam_i3d.media.recipe import DecodeLimits
    from beam_i3d.cli.score import options_from_args

    parser = cli.build_parser()
    args = parser.parse_args([
        "score", "--manifest", "m.csv", "--output", str(tmp_path / "o"),
        "--max-pixels", "1000000", "--max-duration", "600", "--decode-timeout", "30",
        "--max-aspect-ratio", "2.5", "--decode-memory-mb", "2048", "--decode-processes", "3"])
    options = options_from_args(args)
    assert options.limits == DecodeLimits(max_pixels=1000000, max_duration_seconds=600,
                                          decode_timeout_seconds=30, max_aspect_ratio=2.5,
                                          memory_mb=2048)
    assert options.decode_processes == 3
    defaults = options_from_args(parser.parse_args(
        ["score", "--manifest", "m.csv", "--output", str(tmp_path / "o")]))
    assert defaults.limits == DecodeLimits() and defaults.decode_processes is None


def test_preprocess_applies_its_decode_limits(tmp_path, capsys):
    # The sample is 224x224 (50176 pixels).
    assert main(["preprocess", str(SAMPLE), "--out", str(tmp_path / "p"),
                 "--max-pixels", "50000"]) == 1
    err = one_line(capsys)
    assert "v_CricketShot_g04_c01.mp4" in err and not (tmp_path / "p_rgb.npy").exists()


def test_export_to_an_existing_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "model"
    target.write_text("not a directory")
    assert main(["export", "--out", str(target)]) == EXIT_CONFIGURATION
    assert one_line(capsys) == (f"beam-i3d export: error: --out {target} is an existing "
                                "file, not a directory")


# --- 4. Manifests at launch -----------------------------------------------------------


def test_manifest_of_unknown_format(tmp_path, capsys):
    (tmp_path / "a.csv").write_text(f"video_uri\n{SAMPLE}\n")
    (tmp_path / "b.txt").write_text(f"video_uri\n{SAMPLE}\n")
    assert main(["score", "--manifest", str(tmp_path / "*"), "--output",
                 str(tmp_path / "o"), "--dry-run"]) == EXIT_CONFIGURATION
    err = one_line(capsys)
    assert "b.txt: unknown manifest format" in err


@pytest.mark.parametrize("name, data", [
    ("latin1.csv", "video_uri,label\nv.mp4,caf\xe9\n".encode("latin-1")),
    ("utf16.jsonl", '{"video_uri": "v.mp4"}\n'.encode("utf-16")),
    ("fake.parquet", b"video_uri\nv.mp4\n"),
])
def test_manifest_that_is_not_text_or_parquet(tmp_path, capsys, name, data):
    (tmp_path / "good.csv").write_text(f"video_uri\n{SAMPLE}\n")
    (tmp_path / name).write_bytes(data)
    assert main(["score", "--manifest", str(tmp_path / "*.*"), "--output",
                 str(tmp_path / "o"), "--dry-run"]) == EXIT_CONFIGURATION
    err = one_line(capsys)
    assert f"{tmp_path / name}: not" in err


def test_manifest_head_cut_inside_a_character_is_fine(tmp_path, monkeypatch):
    from beam_i3d.job import launch_checks

    monkeypatch.setattr(launch_checks, "HEAD_BYTES", 16)
    path = tmp_path / "m.csv"
    path.write_text("video_uri,label\n" + "v.mp4,\u00e9\u00e9\u00e9\u00e9\n" * 10,
                    encoding="utf-8")
    heads = launch_checks.check_manifest_files([str(path)])
    assert heads[str(path)] == b"video_uri,label\n"  # cut at the last whole line


def test_no_matching_manifest_is_exit_3(tmp_path, capsys):
    assert main(["score", "--manifest", str(tmp_path / "none*.csv"), "--output",
                 str(tmp_path / "o"), "--dry-run"]) == EXIT_CONFIGURATION
    assert "matches no file" in one_line(capsys)


@pytest.mark.parametrize("name, data, words", [
    ("m.csv", f"clip_id,file,label\na,{SAMPLE},x\n".encode(),
     "no video URI column (video_uri, or path, video) and no --video-template; the "
     "manifest's columns: clip_id, file, label"),
    ("m.jsonl", f'{{"clip_id": "a", "uri": "{SAMPLE}"}}\n{{"clip_id": "b", "n": 2}}\n'.encode(),
     "the manifest's columns: clip_id, uri, n"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_manifest_without_a_video_uri_column_is_refused_at_launch(
        tmp_path, capsys, name, data, words, dry_run):
    """Issue #21: every row would fail; the launcher refuses in one line instead (exit 3),
    in a dry run too, naming the file and the columns it has."""
    (tmp_path / "good.csv").write_text(f"video_uri\n{SAMPLE}\n")
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "o"
    assert main(["score", "--manifest", str(tmp_path / "*.*"), "--output", str(out),
                 "--quiet"] + (["--dry-run"] if dry_run else [])) == EXIT_CONFIGURATION
    err = one_line(capsys)
    assert f"{tmp_path / name}: {words}" in err if name.endswith(".csv") else words in err
    assert not out.exists() or not any(out.rglob("*.parquet"))  # nothing ran


def test_with_a_template_its_columns_are_needed_not_video_uri(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"youtube_id": ["v"], "split": ["val"]}), tmp_path / "k.parquet")
    argv = ["score", "--manifest", str(tmp_path / "k.parquet"), "--output",
            str(tmp_path / "o"), "--dry-run"]
    assert main(argv + ["--video-template", str(tmp_path) + "/{split}/{youtube_id}.mp4"]) == 0
    capsys.readouterr()
    assert main(argv + ["--video-template", "/v/{split}/{youtube_id}_{start:06d}.mp4"]) == \
        EXIT_CONFIGURATION
    assert (f"{tmp_path / 'k.parquet'}: --video-template names column(s) start, which the "
            "manifest lacks; its columns: youtube_id, split") in one_line(capsys)


# --- 5. Storage reachable at launch ---------------------------------------------------


def test_reachable_bucket_and_writable_output(gcs_emulator, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    from beam_i3d.job import launch_checks

    samples = [("gs://test-bucket/videos/a.mp4", "m.csv:1"), (str(SAMPLE), "m.csv:2"),
               ("gs://test-bucket/videos/b.mp4", "m.csv:3")]
    started = time.monotonic()
    launch_checks.check_storage(samples, "gs://test-bucket/runs/probe", timeout=20)
    assert time.monotonic() - started < 20
    left = FileSystems.match(["gs://test-bucket/runs/probe/**"])[0].metadata_list
    assert left == []  # the probe object was deleted


def test_output_that_is_an_object(gcs_emulator):
    from apache_beam.io.filesystems import FileSystems

    from beam_i3d.job import launch_checks

    with FileSystems.create("gs://test-bucket/runs/a-file") as f:
        f.write(b"x")
    with pytest.raises(OutputError, match="is an existing object"):
        launch_checks.check_storage([], "gs://test-bucket/runs/a-file", timeout=20)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_storage_fails_fast_with_one_line(gcs_emulator, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_uri\n" + "".join(
        f"gs://test-bucket/videos/{i}.mp4\n" for i in range(5)))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{_closed_port()}",
           "BEAM_I3D_STORAGE_CHECK_TIMEOUT": "5"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "beam_i3d", "score", "--manifest", str(manifest),
         "--output", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == EXIT_CONFIGURATION, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("beam-i3d score: error: cannot read the videos' storage "
                               "gs://test-bucket (tried gs://test-bucket/videos/0.mp4")
    assert "cannot connect" in lines[0]
    assert elapsed < 30
    assert not (tmp_path / "o").exists()


def test_storage_causes_are_named():
    from google.api_core import exceptions as api
    from google.auth.exceptions import DefaultCredentialsError

    from beam_i3d.job.launch_checks import describe_storage_error, run_with_deadline

    assert describe_storage_error(api.Forbidden("no")).startswith("permission denied")
    assert describe_storage_error(api.Unauthorized("no")).startswith("credentials refused")
    wrapped = RuntimeError("match failed")
    wrapped.__cause__ = DefaultCredentialsError("Could not automatically determine "
                                                "credentials")
    assert describe_storage_error(wrapped).startswith("no usable credentials")
    assert describe_storage_error(ConnectionRefusedError(111, "refused")).startswith(
        "cannot connect")
    outcome = run_with_deadline({"slow": lambda: time.sleep(5), "fast": lambda: 7}, 0.2)
    assert outcome["fast"] == (7, None)
    assert describe_storage_error(outcome["slow"][1]).startswith(
        "cannot connect: no answer within 0.2 s")


def test_storage_check_deadline_from_the_environment(monkeypatch):
    from beam_i3d.errors import ConfigurationError
    from beam_i3d.job.launch_checks import storage_timeout

    monkeypatch.setenv("BEAM_I3D_STORAGE_CHECK_TIMEOUT", "3")
    assert storage_timeout() == 3
    monkeypatch.delenv("BEAM_I3D_STORAGE_CHECK_TIMEOUT")
    assert storage_timeout() == 20
    monkeypatch.setenv("BEAM_I3D_STORAGE_CHECK_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError):
        storage_timeout()
    assert issubclass(StorageUnreachable, ConfigurationError)


# --- 6. Quiet by default --------------------------------------------------------------


def test_filter_keeps_our_lines_and_drops_tensorflows(capfd):
    from beam_i3d.cli.quiet import _filtered_stderr

    with _filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                    b"are written to STDERR\n"
                    b"I0000 00:00:1.5 123 cudart_stub.cc:31] Could not find cuda drivers\n"
                    b"UserWarning: something of ours\n")
    assert capfd.readouterr().err == "UserWarning: something of ours\n"


def _stderr_of(code: str, **env_overrides) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "BEAM_I3D_QUIET")}
    env.update(PYTHONPATH=str(ROOT), **env_overrides)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_tensorflow_start_up_lines_are_hidden_unless_verbose():
    """What the launcher does (rgb-only preprocess imports no TensorFlow; the README's
    check was `beam-i3d preprocess SAMPLE --streams rgb,flow`: 11 lines before, 0 after).
    Our own warnings still come through."""
    use_tf = ("import warnings, tensorflow as tf\n"
              "tf.constant(1.0) + 1\n"
              "warnings.warn('ours stays')\n")
    quiet = _stderr_of("from beam_i3d.cli.quiet import quiet_native_logs\n"
                       "quiet_native_logs()\n" + use_tf)
    assert quiet.strip().splitlines() == ["<string>:5: UserWarning: ours stays"], quiet
    # A local worker process: it inherits BEAM_I3D_QUIET and imports beam_i3d.
    worker = _stderr_of("import beam_i3d\n" + use_tf, BEAM_I3D_QUIET="1",
                        TF_CPP_MIN_LOG_LEVEL="3")
    assert "cudart_stub" not in worker and "absl::InitializeLog" not in worker, worker


def test_verbose_is_an_option_of_the_command_and_each_subcommand():
    parser = cli.build_parser()
    assert parser.parse_args(["--verbose", "report", "d"]).verbose is True
    assert parser.parse_args(["report", "d", "--verbose"]).verbose is True
    assert parser.parse_args(["report", "d"]).verbose is False
    assert isinstance(parser.subcommand_parsers["score"], argparse.ArgumentParser)


# --- 7. Packaging ---------------------------------------------------------------------


def test_build_warns_about_no_ignored_package(tmp_path):
    import shutil

    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("beam_i3d", "model", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "setup.py", "build"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "would be ignored" not in done.stdout + done.stderr
    lib = tmp_path / "build" / "lib"
    assert (lib / "beam_i3d" / "data" / "samples" / SAMPLE.name).is_file()
    assert (lib / "model" / "data" / "label_map_400.txt").is_file()
    assert (lib / "model" / "data" / "LICENSE.kinetics-i3d").is_file()


# --- 8. README and manual --------------------------------------------------------------


def test_the_manual_lists_every_exit_status_and_the_readme_the_activation():
    """Every option is in the manual's options reference, generated from the parsers
    (tests/test_docs.py checks the built pages); the exit statuses are a table."""
    statuses = (ROOT / "docs" / "commands" / "index.md").read_text()
    for status in (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_CONFIGURATION,
                   cli.EXIT_RECONCILIATION, cli.EXIT_ERROR_RATE, cli.EXIT_INTERRUPTED):
        assert f"\n| {status} | " in statuses, status
    assert "source .venv/bin/activate" in (ROOT / "README.md").read_text()


def test_parquet_and_templated_rows_name_the_buckets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_i3d.job import launch_checks
    from beam_i3d.job.manifest import ManifestOptions

    pq.write_table(pa.table({"youtube_id": ["a", "b"], "split": ["val", "val"]}),
                   tmp_path / "k.parquet")
    (tmp_path / "k.csv").write_text("youtube_id,split\nc,train\n")
    heads = launch_checks.check_manifest_files(
        [str(tmp_path / "k.csv"), str(tmp_path / "k.parquet")])
    samples = launch_checks.sample_rows(
        heads, ManifestOptions(video_template="gs://b{split}/{youtube_id}.mp4"))
    assert [u for u, _ in samples] == ["gs://btrain/c.mp4", "gs://bval/a.mp4",
                                       "gs://bval/b.mp4"]
    assert {launch_checks.bucket_of(u) for u, _ in samples} == {"gs://btrain", "gs://bval"}


def test_usage_errors_found_after_parsing_are_exit_2(tmp_path, capsys):
    err = usage_error(capsys, ["score", "--manifest", "m.csv", "--output",
                               str(tmp_path / "o"), "--streams", "flow"])
    assert err.startswith("beam-i3d score: error: the flow stream has no bundled weights")


def test_unreadable_checkpoint_is_exit_3(manifest, tmp_path, capsys):
    assert main(["score", "--manifest", manifest, "--output", str(tmp_path / "o"),
                 "--rgb-checkpoint", str(tmp_path / "nope"), "--dry-run"]) == EXIT_CONFIGURATION
    assert "nope" in capsys.readouterr().err
