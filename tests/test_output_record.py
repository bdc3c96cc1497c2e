"""An output is one experiment: every run into an output matches its recorded recipe or
refuses before it writes or deletes anything; verify names shards of another recipe.
Real DirectRunner runs on real encoded videos, as a user runs them (in process)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, EXIT_RECONCILIATION, main
from beam_i3d.job import output_record
from beam_i3d.job.output_record import (NOT_READ, OutputRecord, differences, read_record,
                                        score_recipe_from_metadata)
from schemas import METADATA_PREFIX, read_run_metadata
from test_pipeline import moving_texture, write_manifest


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return moving_texture(tmp_path_factory.mktemp("v") / "v.mp4", 75)  # 3 s at 25 fps


@pytest.fixture()
def manifest(video, tmp_path):
    return write_manifest(tmp_path / "m.csv", [{"clip_id": "v", "video_uri": video}])


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def score(manifest, out, *extra) -> int:
    return main(["score", "--manifest", manifest, "--output", str(out), "--quiet", *extra])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# --- Comparing recipes (pure) -----------------------------------------------------------


def test_differences_name_each_option_in_the_records_order():
    recorded = {"layout": "windows", "window_sec": 1.0, "stride_sec": 1.0, "top_k": 5}
    current = {"layout": "windows", "window_sec": 2.0, "stride_sec": 2.0, "top_k": 5,
               "precision": "f32"}
    assert differences(recorded, current) == [
        "window_sec: recorded 1, this run 2", "stride_sec: recorded 1, this run 2",
        "precision: recorded not set, this run f32"]
    assert differences(recorded, current, common_only=True) == [
        "window_sec: recorded 1, this run 2", "stride_sec: recorded 1, this run 2"]
    assert differences({"a": [1, 2], "b": None, "c": True},
                       {"a": (1, 2), "b": None, "c": True}) == []
    assert differences({"c": True}, {"c": 1}) == ["c: recorded yes, this run 1"]
    # A value a dry run did not read is never a difference.
    assert differences({"rgb_weights": "tensors-sha256:0123"},
                       {"rgb_weights": NOT_READ}) == []


def test_a_record_not_written_by_beam_i3d_is_refused_not_replaced(tmp_path):
    (tmp_path / "recipe.json").write_text('{"something": "else"}')
    with pytest.raises(output_record.OutputError, match="not a recipe record"):
        read_record(str(tmp_path))
    assert (tmp_path / "recipe.json").read_text() == '{"something": "else"}'


# --- score into score outputs ------------------------------------------------------------


def test_a_resume_with_another_window_is_refused_before_anything_is_written(
        manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert score(manifest, out, "--window", "1") == EXIT_OK
    record = read_record(str(out))
    assert record.command == "score" and record.recipe["layout"] == "windows"
    assert (record.recipe["window_sec"], record.recipe["stride_sec"]) == (1.0, 1.0)
    assert record.recipe["rgb_weights"] == "rgb_scratch"
    # Every shard carries the recipe it was written under.
    for path in out.rglob("*.parquet"):
        meta = read_run_metadata(pq.read_schema(path))
        assert json.loads(meta["output_recipe"]) == record.recipe
    before = snapshot(out)
    capsys.readouterr()

    assert score(manifest, out, "--window", "2", "--skip-existing") == EXIT_CONFIGURATION
    line = one_error_line(capsys)
    assert "window_sec: recorded 1, this run 2" in line
    assert "stride_sec: recorded 1, this run 2" in line
    assert snapshot(out) == before
    # --retry-errors and --overwrite are held to the same rule.
    assert score(manifest, out, "--window", "2", "--skip-existing",
                 "--retry-errors") == EXIT_CONFIGURATION
    capsys.readouterr()
    assert score(manifest, out, "--window", "2", "--overwrite") == EXIT_CONFIGURATION
    assert "--overwrite replaces an output of the same recipe only" in one_error_line(capsys)
    assert snapshot(out) == before
    # The same recipe resumes (nothing left to do) and verify passes.
    assert score(manifest, out, "--window", "1", "--skip-existing") == EXIT_OK
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_OK


def test_clip_mode_and_windows_do_not_mix_in_either_direction(manifest, tmp_path, capsys):
    clips, windows = tmp_path / "clips", tmp_path / "windows"
    assert score(manifest, clips) == EXIT_OK
    assert score(manifest, windows, "--window", "1") == EXIT_OK
    before = snapshot(clips), snapshot(windows)
    capsys.readouterr()
    assert score(manifest, clips, "--window", "1", "--skip-existing") == EXIT_CONFIGURATION
    assert "layout: recorded clips, this run windows" in one_error_line(capsys)
    assert score(manifest, windows, "--skip-existing") == EXIT_CONFIGURATION
    assert "layout: recorded windows, this run clips" in one_error_line(capsys)
    # Options that change no number may change on a resume.
    assert score(manifest, clips, "--skip-existing", "--batch-size", "2",
                 "--decode-processes", "1", "--shard-rows", "7") == EXIT_OK
    assert (snapshot(clips), snapshot(windows))[1] == before[1]


def test_an_option_that_changes_numbers_or_keys_is_part_of_the_recipe(manifest, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    assert score(manifest, out) == EXIT_OK
    for extra, name in ((["--top-k", "3"], "top_k"), (["--no-embeddings"], "embeddings"),
                        (["--max-seconds", "2"], "max_seconds"),
                        (["--ignore-times"], "ignore_times"),
                        (["--allow-tf32"], "allow_tf32")):
        capsys.readouterr()
        assert score(manifest, out, "--skip-existing", *extra) == EXIT_CONFIGURATION, extra
        assert f"{name}: recorded" in one_error_line(capsys)
    # A dry run is checked too, and says so before anything else.
    assert score(manifest, out, "--top-k", "3", "--overwrite", "--dry-run") == \
        EXIT_CONFIGURATION


def test_overwrite_of_the_same_recipe_replaces_and_rewrites_the_record(manifest, tmp_path):
    out = tmp_path / "out"
    assert score(manifest, out) == EXIT_OK
    first = read_record(str(out))
    assert score(manifest, out, "--overwrite") == EXIT_OK
    second = read_record(str(out))
    assert second.recipe == first.recipe and second.run_id != first.run_id
    runs = {r for p in (out / "scores").glob("*.parquet")
            for r in pq.read_table(p, columns=["run_id"]).column("run_id").to_pylist()}
    assert runs == {second.run_id}


# --- Outputs written before records existed ---------------------------------------------


def strip_recipe(out: Path) -> None:
    """Make ``out`` look as an older version wrote it: no recipe.json, and shards whose
    metadata has no output_recipe (the rest of the run metadata stays)."""
    (out / "recipe.json").unlink()
    for path in out.rglob("*.parquet"):
        table = pq.read_table(path)
        meta = {k: v for k, v in table.schema.metadata.items()
                if k != f"{METADATA_PREFIX}output_recipe".encode()}
        meta[f"{METADATA_PREFIX}schema_version".encode()] = b"3"  # as it then was
        pq.write_table(table.replace_schema_metadata(meta), path)


def test_a_legacy_output_takes_its_recipe_from_its_shards(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert score(manifest, out, "--window", "1") == EXIT_OK
    strip_recipe(out)
    meta = read_run_metadata(pq.read_schema(next((out / "windows").glob("*.parquet"))))
    legacy = score_recipe_from_metadata(meta)
    assert legacy["layout"] == "windows" and legacy["window_sec"] == 1.0
    assert "video_template" not in legacy  # older shards did not record it
    before = snapshot(out)
    capsys.readouterr()
    assert score(manifest, out, "--window", "2", "--skip-existing") == EXIT_CONFIGURATION
    line = one_error_line(capsys)
    assert "window_sec: recorded 1, this run 2" in line and "shards" in line
    assert snapshot(out) == before
    # The same recipe resumes it, and the output now records its recipe.
    assert score(manifest, out, "--window", "1", "--skip-existing") == EXIT_OK
    assert read_record(str(out)).recipe["window_sec"] == 1.0


def test_a_legacy_output_that_already_mixes_recipes_cannot_be_resumed(manifest, tmp_path,
                                                                        capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert score(manifest, one, "--window", "1") == EXIT_OK
    assert score(manifest, two, "--window", "2") == EXIT_OK
    strip_recipe(one)
    strip_recipe(two)
    for path in (two / "windows").glob("*.parquet"):  # as defect 1 left it
        shutil.copy(path, one / "windows" / path.name)
    capsys.readouterr()
    assert score(manifest, one, "--window", "1", "--skip-existing") == EXIT_CONFIGURATION
    assert "already mixes recipes" in one_error_line(capsys)
    # verify names the shards of the other recipe.
    capsys.readouterr()
    assert main(["verify", "--manifest", manifest, "--output", str(one)]) == \
        EXIT_RECONCILIATION
    printed = capsys.readouterr().out
    assert "window_sec" in printed and "not written under" in printed


def test_verify_names_shards_written_under_another_recipe(manifest, tmp_path, capsys):
    out, other = tmp_path / "out", tmp_path / "other"
    assert score(manifest, out) == EXIT_OK
    assert score(manifest, other, "--top-k", "2") == EXIT_OK
    stray = next((other / "scores").glob("*.parquet"))
    shutil.copy(stray, out / "scores" / ("zz-" + stray.name))
    capsys.readouterr()
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == \
        EXIT_RECONCILIATION
    printed = capsys.readouterr().out
    assert f"zz-{stray.name}" in printed and "top_k: recorded 5, this run 2" in printed
    assert "1 shard(s)" in printed
    # report says the same, as a warning.
    assert main(["report", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert f"zz-{stray.name} was not written under the recorded recipe" in printed


def test_verify_reads_the_template_and_times_from_the_record(video, tmp_path, capsys):
    folder = Path(video).parent
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "v", "video_uri": "v",
                                                    "start_sec": 0, "end_sec": 1}])
    template = str(folder / "{video_uri}.mp4")
    out = tmp_path / "out"
    assert score(manifest, out, "--video-template", template, "--ignore-times") == EXIT_OK
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_OK
    capsys.readouterr()
    with pytest.raises(output_record.RecipeMismatch, match="--video-template"):
        from beam_i3d.job import verify
        verify.manifest_options_of(read_record(str(out)), "other/{video_uri}", False)


# --- score and fvd ---------------------------------------------------------------------


def write_stats(path: Path, seed: int) -> str:
    from beam_i3d.fvd.distance import Moments
    from beam_i3d.fvd.stats_files import FeatureSetStats, save_npz

    features = np.random.default_rng(seed).normal(size=(6, 400))
    save_npz(FeatureSetStats(Moments.of(features), protocol="original", frames=16,
                             weights="rgb_scratch", features="logits_mean",
                             covariance="unbiased"), str(path))
    return str(path)


def test_score_and_fvd_never_write_into_each_others_outputs(manifest, tmp_path, capsys):
    out, fvd_out = tmp_path / "scored", tmp_path / "fvd"
    assert score(manifest, out) == EXIT_OK
    real, fake = write_stats(tmp_path / "r.npz", 0), write_stats(tmp_path / "f.npz", 1)
    before = snapshot(out)
    capsys.readouterr()
    # fvd --overwrite into a score output: refused, naming what it is; nothing deleted.
    status = main(["fvd", "--real", real, "--fake", fake, "--output", str(out),
                   "--overwrite"])
    assert status == EXIT_CONFIGURATION
    line = one_error_line(capsys)
    assert "is a `beam-i3d score` output" in line and "deletes nothing here" in line
    assert snapshot(out) == before
    # An fvd output records itself; score (even a dry run) is refused there.
    assert main(["fvd", "--real", real, "--fake", fake, "--output", str(fvd_out)]) == EXIT_OK
    assert read_record(str(fvd_out)).command == "fvd"
    capsys.readouterr()
    assert score(manifest, fvd_out, "--dry-run") == EXIT_CONFIGURATION
    assert "is a `beam-i3d fvd` output" in one_error_line(capsys)
    assert score(manifest, fvd_out, "--overwrite") == EXIT_CONFIGURATION
    assert (fvd_out / "fvd.json").exists()
    # verify does not check fvd outputs as score outputs.
    assert main(["verify", "--manifest", manifest, "--output", str(fvd_out)]) == \
        EXIT_CONFIGURATION
    # An fvd --overwrite of its own output with its own recipe replaces it.
    assert main(["fvd", "--real", real, "--fake", fake, "--output", str(fvd_out),
                 "--overwrite"]) == EXIT_OK
    # ... but not with another recipe.
    capsys.readouterr()
    assert main(["fvd", "--real", real, "--fake", fake, "--output", str(fvd_out),
                 "--overwrite", "--frames", "20"]) == EXIT_CONFIGURATION
    assert "frames: recorded 16, this run 20" in capsys.readouterr().err


def test_a_legacy_score_output_without_a_record_is_told_apart_from_fvd(manifest, tmp_path,
                                                                         capsys):
    out = tmp_path / "out"
    gone = os.path.join(str(tmp_path), "absent.mp4")
    bad = write_manifest(tmp_path / "bad.csv", [{"clip_id": "x", "video_uri": gone}])
    assert main(["score", "--manifest", bad, "--output", str(out), "--quiet",
                 "--max-error-rate", "1"]) == EXIT_OK
    strip_recipe(out)
    assert not (out / "scores").exists()  # errors alone
    assert output_record.command_of_files(str(out)) == "score"
    real, fake = write_stats(tmp_path / "r.npz", 0), write_stats(tmp_path / "f.npz", 1)
    capsys.readouterr()
    assert main(["fvd", "--real", real, "--fake", fake, "--output", str(out),
                 "--overwrite"]) == EXIT_CONFIGURATION
    assert "is a `beam-i3d score` output" in one_error_line(capsys)
    assert (out / "errors").exists()


def test_records_and_shards_on_gcs(gcs_emulator):
    """The record and the shard checks through Beam's FileSystems, against the local
    GCS emulator (the real protocol)."""
    import pyarrow as pa

    from beam_i3d.job.shards import write_table_atomically
    from schemas import ERRORS_SCHEMA, with_run_metadata

    out = "gs://test-bucket/records/run"
    assert read_record(out) is None and output_record.command_of_files(out) is None
    recipe = {"layout": "clips", "top_k": 5}
    output_record.write_record(out, OutputRecord("score", recipe, "r1", "0"))
    assert read_record(out) == OutputRecord("score", recipe, "r1", "0")
    row = {"clip_id": "c", "video_uri": "v", "stage": "decode", "error_type": "X",
           "message": "m", "source": "s", "row_key": "c", "run_id": "r1"}
    for name, top_k in (("a.parquet", 5), ("b.parquet", 3)):
        schema = with_run_metadata(ERRORS_SCHEMA, {"output_recipe": {**recipe,
                                                                     "top_k": top_k}})
        write_table_atomically(pa.Table.from_pylist([row], schema=schema),
                               f"{out}/errors/{name}")
    assert output_record.command_of_files(out) == "score"
    off = output_record.shards_off_recipe(out, read_record(out))
    assert off == [(f"{out}/errors/b.parquet", ["top_k: recorded 5, this run 3"])]
    with pytest.raises(output_record.RecipeMismatch, match="top_k: recorded 5, this run 4"):
        output_record.check_output_recipe(out, "score", {**recipe, "top_k": 4})
    with pytest.raises(output_record.RecipeMismatch, match="is a `beam-i3d score` output"):
        output_record.check_output_recipe(out, "fvd", {})


def test_schema_versions_that_read_together_are_one_experiment():
    assert differences({"schema_version": "3"}, {"schema_version": "4"}) == []
    assert differences({"schema_version": "2"}, {"schema_version": "4"}) == [
        "schema_version: recorded 2, this run 4"]


def test_the_precision_is_part_of_the_recipe_and_the_backend_at_f32_is_not(tmp_path):
    from beam_i3d.job.output_record import score_recipe
    from beam_i3d.job.pipeline import ScoreOptions

    base = ScoreOptions(manifest="m.csv", output=str(tmp_path))
    f32 = score_recipe(base, 400)
    assert f32["precision"] == "f32" and "model_backend" not in f32
    other_backend = ScoreOptions(manifest="m.csv", output=str(tmp_path), model_backend="tf")
    assert differences(f32, score_recipe(other_backend, 400)) == []
    bf16 = ScoreOptions(manifest="m.csv", output=str(tmp_path), precision="bf16")
    assert differences(f32, score_recipe(bf16, 400)) == [
        "precision: recorded f32, this run bf16"]
