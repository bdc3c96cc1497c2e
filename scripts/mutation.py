#!/usr/bin/env python3
"""Mutation testing (mutmut) of the modules that decide counts and numbers.

Too slow for CI; run it by hand from the repository root with the project's virtualenv:

    .venv/bin/python scripts/mutation.py                 # every module below
    .venv/bin/python scripts/mutation.py job/row_keys    # some of them

For each module, a copy of the committed tree (``git archive HEAD``, so uncommitted
edits are not measured) goes to a temporary directory; mutmut mutates that module only
and runs the module's tests (``MODULES``) against each mutant. Prints, per module, the
mutants killed / all (timeouts count as killed: the mutant made a test hang), the score,
and every surviving mutant as a diff (``--quiet``: names only), each with the reason it
is harmless where one is recorded in ``scripts/mutation_survivors/<module>.txt``
(``job/verify`` -> ``job.verify.txt``; one line per mutant: its name without the
``beam_i3d.<module>.`` prefix, whitespace, the reason; ``#`` starts a comment). A
survivor without a recorded reason is printed as ``UNEXPLAINED``. Exit status 1 when a
module is under ``--target`` (default 0.85) or has an unexplained survivor.

The figures last measured are in tests/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module (under beam_i3d/) -> the test files that are meant to catch its mutants.
MODULES: dict[str, list[str]] = {
    "job/row_keys": ["tests/test_row_keys.py", "tests/test_verify.py", "tests/test_manifest.py",
                     "tests/test_routing.py"],
    "job/manifest": ["tests/test_manifest.py", "tests/test_routing.py"],
    "job/verify": ["tests/test_verify.py", "tests/test_routing.py"],
    "job/routing": ["tests/test_routing.py"],
    "job/records": ["tests/test_records.py", "tests/test_score_record.py"],
    "job/results": ["tests/test_results.py", "tests/test_verify.py"],
    "job/shards": ["tests/test_shards.py", "tests/test_verify.py", "tests/test_progress.py"],
    "job/outputs": ["tests/test_outputs.py"],
    "job/windows": ["tests/test_window_plan.py"],
    "fvd/distance": ["tests/test_fvd_distance.py", "tests/test_fvd_core.py"],
    "fvd/stats_files": ["tests/test_fvd_stats_files.py", "tests/test_fvd_core.py"],
    "media/recipe": ["tests/test_decode_limits.py", "tests/test_decode.py", "tests/test_resize.py"],
    "job/inference": ["tests/test_batch_plan.py", "tests/test_inference_model.py",
                      "tests/test_inference.py"],
    "media/preprocess": ["tests/test_clip_tensors.py", "tests/test_preprocess.py",
                         "tests/test_decode.py"],
}
ALSO_COPY = ["model/", "schemas/", "setup.py", "pytest.ini", "tests/"]
# Modules whose tests run TensorFlow. By default mutmut runs the unmutated tests in its
# own process and forks each mutant's run from it; once that process has run a TF graph
# (a model forward), a forked child's first forward blocks forever, and mutmut's wall
# clock limit then counts the mutant as a timeout, i.e. caught. For these, mutmut's
# fork server runs every test in a child of a process that has only imported modules.
FORKSERVER = {"job/inference", "media/preprocess"}
# mutmut's statuses (mutmut.stats.status_by_exit_code) that count as caught: a test
# failed, or the mutant made the tests hang. "survived" and "no tests" (no selected test
# reaches the mutated function) count against the module.
CAUGHT = {"killed", "timeout"}


SURVIVORS = ROOT / "scripts" / "mutation_survivors"


def recorded_reasons(module: str) -> dict[str, str]:
    """Mutant name (``x_func__mutmut_3``) -> why it survives harmlessly, for ``module``."""
    path = SURVIVORS / f"{module.replace('/', '.')}.txt"
    reasons = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                reasons[name] = reason.strip()
    return reasons


def committed_tree(dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def run_module(module: str, tests: list[str], children: int, quiet: bool
               ) -> tuple[int, int, int]:
    """Mutate ``module``; returns (killed, mutants, survivors without a recorded reason)."""
    source = f"beam_i3d/{module}.py"
    work = Path(tempfile.mkdtemp(prefix="beam-i3d-mutation-"))
    try:
        committed_tree(work)
        shared = ROOT.parent / "shared"
        if shared.exists() and not (work.parent / "shared").exists():
            os.symlink(shared, work.parent / "shared")
        (work / "setup.cfg").write_text(
            "[mutmut]\nsource_paths=beam_i3d/\n"
            f"only_mutate={source}\n"
            "pytest_add_cli_args_test_selection=" + "\n    ".join(tests) + "\n"
            "also_copy=" + "\n    ".join(ALSO_COPY) + "\n"
            + ("process_isolation=forkserver\n" if module in FORKSERVER else ""))
        env = dict(os.environ, BEAM_I3D_HYPOTHESIS_PROFILE="mutation",
                   TF_CPP_MIN_LOG_LEVEL="2")
        mutmut = [sys.executable, "-m", "mutmut"]
        started = time.monotonic()
        run = subprocess.run(mutmut + ["run", "--max-children", str(children)], cwd=work,
                             env=env, capture_output=True, text=True)
        meta_path = work / "mutants" / f"{source}.meta"
        if not meta_path.exists():
            print(f"{module}: mutmut did not run (exit {run.returncode}):\n"
                  f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
            return 0, 0, 0
        from mutmut.stats import status_by_exit_code

        codes = json.loads(meta_path.read_text())["exit_code_by_key"]
        status = {k: status_by_exit_code[c] for k, c in codes.items()}
        killed = sorted(k for k in codes if status[k] in CAUGHT)
        survived = sorted(k for k in codes if status[k] not in CAUGHT)
        total = len(codes)
        score = len(killed) / total if total else 1.0
        print(f"{module}: {len(killed)}/{total} killed ({score:.0%}), "
              f"{time.monotonic() - started:.0f} s; tests: {' '.join(tests)}")
        reasons = recorded_reasons(module)
        prefix = f"beam_i3d.{module.replace('/', '.')}."
        unexplained = 0
        for name in survived:
            short = name.removeprefix(prefix)
            reason = reasons.get(short)
            unexplained += reason is None
            print(f"  {status[name]}: {short}: {reason or 'UNEXPLAINED'}")
            if not quiet:
                shown = subprocess.run(mutmut + ["show", name], cwd=work, env=env,
                                       capture_output=True, text=True).stdout
                print("    " + "\n    ".join(shown.strip().splitlines()[1:]))
        stale = sorted(set(reasons) - {n.removeprefix(prefix) for n in survived})
        if stale:
            print(f"  recorded as surviving but killed or gone (remove): {' '.join(stale)}")
        print(f"  {module}: {unexplained} survivor(s) without a recorded reason")
        return len(killed), total, unexplained
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of: {', '.join(MODULES)}")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested at once")
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--quiet", action="store_true", help="survivors' names only")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    below = []
    for module in args.modules or list(MODULES):
        killed, total, unexplained = run_module(module, MODULES[module], args.children,
                                                args.quiet)
        if not total or killed / total < args.target or unexplained:
            below.append(module)
    print(f"under {args.target:.0%} or with unexplained survivors: "
          f"{', '.join(below) if below else 'none'}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
