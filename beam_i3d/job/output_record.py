"""An output is one experiment: the recipe an output directory records, and the checks
that keep every run into it on that recipe.

The first run into an output writes ``DIR/recipe.json``: the command that wrote it
(``score`` or ``fvd``) and its *recipe*, a flat mapping of every option that changes a
number or a row's identity (streams, checkpoints and their tensors' identity, flow
backend and quantisation, window and stride, crops, max seconds, top-k, embeddings, template,
``--ignore-times``, the schema version...; see ``score_recipe`` in
:mod:`beam_i3d.job.pipeline` and ``fvd_recipe`` in :mod:`beam_i3d.fvd.command`). Every
shard written also carries the recipe in its Parquet metadata (``beam_i3d.output_recipe``).

Every later run of any command into the output (a resume, ``--retry-errors``,
``--overwrite``, another command) compares its own recipe with the record before it
writes or deletes anything (:func:`check_output_recipe`), and refuses with one line
naming each difference (:class:`~beam_i3d.errors.RecipeMismatch`, exit 3). What a run
may change is what changes no number: batch sizes, decode limits and processes, shard
sizes, the runner.

An output written before records existed has no ``recipe.json``: its recipe is taken
from its shards' metadata (:func:`legacy_recipe`; what those recorded is compared, the
rest cannot be), and a run that resumes it writes the record.

``verify`` and ``report`` check that every shard was written under the recorded recipe
(:func:`shards_off_recipe`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping

from beam_i3d import fileio
from beam_i3d.errors import OutputError, RecipeMismatch

RECORD_NAME = "recipe.json"
RECORD_FORMAT = 1
# The shards' Parquet metadata key (under schemas.METADATA_PREFIX) holding the recipe.
METADATA_KEY = "output_recipe"

# What each command writes under its output (directories of shards, and files).
COMMAND_FILES = {
    "score": ("scores", "errors", "windows", "timelines", "plans"),
    "fvd": ("clips", "errors", "stats", "fvd.json"),
    "features": ("index.parquet", ".index-parts"),
}
# Files that name their command alone (errors/ is written by both).
_OWN_FILES = {"score": ("scores", "windows", "timelines", "plans"),
              "fvd": ("clips", "stats", "fvd.json"),
              "features": ("index.parquet", ".index-parts")}


@dataclasses.dataclass(frozen=True)
class OutputRecord:
    """``DIR/recipe.json``: the command that writes the output and its recipe (flat:
    name -> JSON value), with the run that created it and the tool's version."""

    command: str
    recipe: dict[str, Any]
    run_id: str = ""
    version: str = ""

    def to_json(self) -> str:
        return json.dumps({"format": RECORD_FORMAT, "command": self.command,
                           "recipe": self.recipe, "created_by_run": self.run_id,
                           "version": self.version}, indent=2, sort_keys=False) + "\n"


def record_path(output: str) -> str:
    return fileio.join(output, RECORD_NAME)


def _exists(path: str) -> bool:
    if fileio.is_local(path):
        return os.path.exists(fileio.local_path(path))
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def _read_bytes(path: str) -> bytes:
    if fileio.is_local(path):
        with open(fileio.local_path(path), "rb") as f:
            return f.read()
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def read_record(output: str) -> OutputRecord | None:
    """The output's record, or None where it has none; OutputError for a record that
    is not one beam-i3d wrote (it is never guessed at, nor replaced)."""
    path = record_path(output)
    if not _exists(path):
        return None
    try:
        data = json.loads(_read_bytes(path).decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'}"
                             f", expected {RECORD_FORMAT}")
        if data["command"] not in COMMAND_FILES or not isinstance(data["recipe"], dict):
            raise ValueError(f"command {data['command']!r}")
        return OutputRecord(data["command"], data["recipe"], data.get("created_by_run", ""),
                            data.get("version", ""))
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise OutputError(f"{path} is not a recipe record beam-i3d wrote ({e}); move it "
                          "out of the output directory or choose another --output") from None


def write_record(output: str, record: OutputRecord) -> None:
    """Write ``DIR/recipe.json`` (atomically where local)."""
    fileio.write_bytes(record_path(output), record.to_json().encode("utf-8"),
                       "application/json")


# --- Comparing recipes ------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value == int(value):
        return f"{value:g}"
    return json.dumps(value) if not isinstance(value, str) else value


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                common_only: bool = False) -> list[str]:
    """``name: recorded X, this run Y`` for each option whose values differ, in the
    record's order (then the new names); ``common_only``: compare only the names both
    have (a recipe read back from older shards, which recorded less)."""
    names = list(recorded) + [n for n in current if n not in recorded]
    out = []
    missing = object()
    for name in names:
        # A name a recipe lacks that has a value implied then (recipes before it existed)
        default = _IMPLIED.get(name, missing)
        a, b = recorded.get(name, default), current.get(name, default)
        if NOT_READ in (a, b):
            continue
        if common_only and (a is missing or b is missing):
            continue
        if name in _SAME and a is not missing and b is not missing and _SAME[name](a, b):
            continue
        if _canonical(a) != _canonical(b):
            out.append(f"{name}: recorded {'not set' if a is missing else _shown(a)}, "
                       f"this run {'not set' if b is missing else _shown(b)}")
    return out


def _same_schema(a: Any, b: Any) -> bool:
    from schemas import read_together

    return read_together(str(a), str(b))


# Entries whose values may differ and still be one experiment: schema versions whose
# files read together (a later one only adds nullable columns).
_SAME: dict[str, Callable[[Any, Any], bool]] = {"schema_version": _same_schema}
# Entries added to the recipe later, and the value a recipe without them was made with:
# an output recorded before ``crops`` existed is a centre-crop one, and resumes as such.
_IMPLIED: dict[str, Any] = {"crops": "center"}


def _canonical(value: Any) -> Any:
    """A value as a record written and read back holds it, for comparison: tuples as
    lists, numbers as floats (1 == 1.0), booleans apart from numbers (True != 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return ("b", value) if isinstance(value, bool) else value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return repr(value)


# --- What an output holds ------------------------------------------------------------


def files_present(output: str, names: Iterable[str]) -> list[str]:
    """Which of ``names`` (directories of shards, or files) exist under ``output``
    (a directory counts only with a file in it)."""
    found = []
    for name in names:
        path = fileio.join(output, name)
        if fileio.is_local(path):
            local = fileio.local_path(path)
            if os.path.isfile(local) or (os.path.isdir(local) and any(
                    files for _, _, files in os.walk(local))):
                found.append(name)
            continue
        from apache_beam.io.filesystems import FileSystems

        matched = FileSystems.match([path, path + "/**"])
        if any(r.metadata_list for r in matched):
            found.append(name)
    return found


def shard_paths(output: str, directories: Iterable[str]) -> list[str]:
    from beam_i3d.job.results import list_shards

    return [p for d in directories for p in list_shards(fileio.join(output, d))]


def shard_metadata(path: str) -> dict[str, str]:
    """The ``beam_i3d.*`` metadata of one shard (its footer only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_i3d.job.results import open_shard
    from schemas import read_run_metadata

    try:
        with open_shard(path) as f:
            return read_run_metadata(pq.ParquetFile(f).schema_arrow)
    except (pa.ArrowInvalid, OSError) as e:
        raise OutputError(f"{path} is not a Parquet file beam-i3d wrote ({e}); move it "
                          "out of the output directory") from e


def shard_recipe(metadata: Mapping[str, str],
                 from_legacy: Callable[[Mapping[str, str]], dict] | None = None
                 ) -> tuple[dict, bool]:
    """(recipe, exact) of a shard: the recipe it carries (exact), else the one its older
    metadata implies through ``from_legacy`` (partial), else ``{}``."""
    if METADATA_KEY in metadata:
        return json.loads(metadata[METADATA_KEY]), True
    return (from_legacy(metadata) if from_legacy and metadata else {}), False


def command_of_files(output: str) -> str | None:
    """The command whose files an output without a record holds (None: empty); errors
    alone are told apart by their metadata (fvd's errors have a ``side`` column)."""
    for command, names in _OWN_FILES.items():
        if files_present(output, names):
            return command
    errors = shard_paths(output, ["errors"])
    if not errors:
        return None
    import pyarrow.parquet as pq

    from beam_i3d.job.results import open_shard

    with open_shard(errors[0]) as f:
        names = pq.ParquetFile(f).schema_arrow.names
    return "fvd" if "side" in names else "score"


def legacy_recipe(output: str, command: str,
                  from_legacy: Callable[[Mapping[str, str]], dict] | None) -> dict | None:
    """The recipe an output without a record was written under, read from its shards'
    metadata (what they recorded); None where they recorded none. RecipeMismatch where
    its shards already disagree (an output mixed before records existed)."""
    seen: dict[str, tuple[dict, str]] = {}
    for path in shard_paths(output, [d for d in COMMAND_FILES[command] if "." not in d]):
        recipe, _ = shard_recipe(shard_metadata(path), from_legacy)
        if recipe:
            seen.setdefault(json.dumps(recipe, sort_keys=True), (recipe, path))
    if not seen:
        return None
    if len(seen) > 1:
        (a, pa_), (b, pb) = list(seen.values())[:2]
        raise RecipeMismatch(
            f"{output} already mixes recipes ({len(seen)} of them, e.g. "
            f"{os.path.basename(pa_)} and {os.path.basename(pb)} differ in "
            f"{'; '.join(differences(a, b, common_only=True)) or 'what they record'}): it "
            "cannot be resumed; write to another --output")
    return next(iter(seen.values()))[0]


# --- Before a run writes anything ---------------------------------------------------


def check_output_recipe(output: str, command: str, recipe: Mapping[str, Any], *,
                        overwrite: bool = False,
                        from_legacy: Callable[[Mapping[str, str]], dict] | None = None,
                        ) -> OutputRecord | None:
    """Refuse (RecipeMismatch, one line) a run of ``command`` with ``recipe`` into an
    output that another command wrote or that records another recipe; returns the
    output's record (None: it has none). Reads only; run before anything is written or
    deleted. ``overwrite`` only words the refusal: it replaces an output of its own
    command and recipe, never another's."""
    record = read_record(output)
    other = record.command if record else command_of_files(output)
    if other is not None and other != command:
        what = (f"a `beam-i3d {other}` output" + (f" ({RECORD_NAME})" if record else ""))
        raise RecipeMismatch(
            f"{output} is {what}: `beam-i3d {command}` does not write into it"
            + (f" (--overwrite replaces only a {command} output, and deletes nothing here)"
               if overwrite else "") + "; choose another --output")
    if record is not None:
        found, exact = record.recipe, True
    else:
        found, exact = legacy_recipe(output, command, from_legacy), False
        if found is None:
            return None
    diffs = differences(found, recipe, common_only=not exact)
    if diffs:
        where = record_path(output) if exact else f"{output}'s shards"
        raise RecipeMismatch(
            f"{output} holds another recipe than this run's ({'; '.join(diffs)}; recorded "
            f"in {where}): a run into an output must keep its recipe, so that no "
            "numbers of two recipes mix; write this one to another --output"
            + (" (--overwrite replaces an output of the same recipe only)" if overwrite
               else ""))
    return record


def shards_off_recipe(output: str, record: OutputRecord | None,
                      from_legacy: Callable[[Mapping[str, str]], dict] | None = None,
                      directories: Iterable[str] | None = None,
                      known: Mapping[str, Mapping[str, str]] | None = None
                      ) -> list[tuple[str, list[str]]]:
    """(shard path, differences) for each shard under ``output`` not written under its
    recorded recipe (see :func:`off_recipe`). Reads the footer of each shard whose
    metadata ``known`` (path -> metadata, e.g. ``results.Settled.metadata``) lacks."""
    command = record.command if record else (command_of_files(output) or "score")
    dirs = [d for d in (directories or COMMAND_FILES[command]) if "." not in d]
    known = known or {}
    return off_recipe({path: known[path] if path in known else shard_metadata(path)
                       for path in shard_paths(output, dirs)}, record, from_legacy)


def off_recipe(metadata_by_path: Mapping[str, Mapping[str, str]],
               record: OutputRecord | None,
               from_legacy: Callable[[Mapping[str, str]], dict] | None = None
               ) -> list[tuple[str, list[str]]]:
    """(path, differences) for each shard whose metadata (``schemas.read_run_metadata``)
    shows another recipe than the record's; without a record, than the first shard's
    that records one (an older output: what its shards recorded). Shards recording no
    recipe at all are not judged."""
    reference = record.recipe if record else None
    off = []
    for path, metadata in metadata_by_path.items():
        recipe, exact = shard_recipe(metadata, from_legacy)
        if not recipe:
            continue
        if reference is None:
            reference = recipe
            continue
        diffs = differences(reference, recipe, common_only=not (exact and record))
        if diffs:
            off.append((path, diffs))
    return off


# --- The score command's recipe ------------------------------------------------------

# A value the launcher did not read (a dry run does not read remote checkpoints): never
# a difference.
NOT_READ = "(not read in a dry run)"


def score_recipe(options, num_classes: int) -> dict[str, Any]:
    """What a ``score`` run's numbers and row identities depend on (``options``: a
    :class:`~beam_i3d.job.score_options.ScoreOptions`); flat, JSON values. Not in it: what
    changes no number (batching, decode limits and processes, shards, runner)."""
    from beam_i3d.media import recipe as media
    from schemas import SCHEMA_VERSION

    weights = dict(options.weights)
    out: dict[str, Any] = {
        "layout": "windows" if options.window is not None else "clips",
        "streams": ",".join(options.streams),
    }
    for stream in options.streams:
        out[f"{stream}_weights"] = weights.get(stream, NOT_READ)
    out["num_classes"] = num_classes
    frames = options.window is not None and options.window.in_frames
    if frames:  # --window-frames / --stride-frames (at --fps)
        out["window_frames"] = int(options.window.window_frames)
        out["stride_frames"] = int(options.window.stride_in_frames)
    elif options.window is not None:
        out["window_sec"] = float(options.window.window)
        out["stride_sec"] = float(options.window.stride_sec)
    else:
        out["max_seconds"] = float(options.max_seconds)
    out.update({
        # "native" (the video's own frames) or frames per second sampled
        "fps": options.window.fps if frames else media.SAMPLE_FPS,
        "resize_short_side": media.RESIZE_SHORT_SIDE,
        "crop": media.CROP_SIZE,
        # --crops: which 224x224 crops of the resized frame are scored (media.crops)
        "crops": options.crops,
        "min_frames": media.MIN_FRAMES,
    })
    if "flow" in options.streams:
        out["flow_backend"] = options.flow_backend
        out["flow_quantized"] = bool(options.quantize_flow)
    # The precision changes every number (bf16 drifts up to 0.2 in a logit). The model
    # backend at f32 does not enter: TensorFlow and OpenVINO agree within 1e-4 on every
    # shape the job makes (tests/test_model_backends.py), closer than one backend on two
    # CPU families, and `auto` resolves per worker (TensorFlow on GPUs), so a resume on
    # other hardware may run the other one; each shard's metadata says which was asked.
    out.update({
        "precision": options.precision,
        "allow_tf32": bool(options.allow_tf32),
        "top_k": options.top_k,
        "embeddings": bool(options.embeddings),
        "video_template": options.video_template,
        "ignore_times": bool(options.ignore_times),
        "schema_version": SCHEMA_VERSION,
    })
    return out


def score_recipe_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The part of :func:`score_recipe` that a shard written before records existed
    implies through its run metadata (``schemas.read_run_metadata``); {} for none."""
    if "streams" not in metadata:
        return {}
    get = json.loads
    out: dict[str, Any] = {
        "layout": "windows" if "window" in metadata else "clips",
        "streams": metadata["streams"],
    }
    checkpoints = get(metadata["checkpoints"]) if "checkpoints" in metadata else {}
    if checkpoints.get("rgb") == "default":  # the one spec whose identity is known
        out["rgb_weights"] = "rgb_scratch"
    if "num_classes" in metadata:
        out["num_classes"] = get(metadata["num_classes"])
    if "window" in metadata:
        window = get(metadata["window"])
        if window.get("window_frames") is not None:
            out["window_frames"] = int(window["window_frames"])
            out["stride_frames"] = int(window["stride_frames"])
        else:
            out["window_sec"] = float(window["window_sec"])
            out["stride_sec"] = float(window["stride_sec"])
    recipe = get(metadata["recipe"]) if "recipe" in metadata else {}
    if "max_seconds" in recipe and "window" not in metadata:
        out["max_seconds"] = float(recipe["max_seconds"])
    for name, key in (("fps", "fps"), ("resize_short_side", "resize_short_side"),
                      ("crop", "crop"), ("crops", "crops"), ("min_frames", "min_frames")):
        if key in recipe:
            out[name] = recipe[key]
    if "flow" in recipe:
        out["flow_backend"] = recipe["flow"].get("backend")
        out["flow_quantized"] = bool(recipe["flow"].get("quantized"))
    for name in ("allow_tf32", "top_k", "embeddings"):
        if name in metadata:
            out[name] = get(metadata[name])
    if "precision" in metadata:
        out["precision"] = metadata["precision"]
    if "ignore_times" in recipe:
        out["ignore_times"] = bool(recipe["ignore_times"])
    if "schema_version" in metadata:
        out["schema_version"] = metadata["schema_version"]
    return out
