"""Time and peak memory of ``beam-i3d report`` on a large synthetic run.

    python benchmarks/report_speed.py [--rows 1000000] [--classes 400] [--parts 10]
                                      [--no-logits] [--keep DIR]

Builds a scores dataset of ROWS clips in the output schema (top-5 lists, full-length
``logits`` and ``rgb_logits`` unless --no-logits, embeddings null, ~5% unlabelled,
~70% top-1 right), spread over PARTS Parquet files, plus 1% as many error rows, in a temp
dir; then runs ``beam-i3d report DIR`` in a child process and prints its wall time and
peak RSS, next to those of a child that only imports the report's modules (the fixed
cost), and the top-1 accuracy it reported against the true one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.labels import label_map, label_map_name  # noqa: E402
from schemas import ERRORS_SCHEMA, SCORES_SCHEMA, TOP_K_ENTRY, with_run_metadata  # noqa: E402

K = 5


def list_array(values: pa.Array, n: int, size: int) -> pa.ListArray:
    """``n`` lists of ``size`` consecutive ``values`` each."""
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * size), values)


def scores_table(n: int, names: pa.Array, rng: np.random.Generator, logits: bool,
                 first_id: int) -> tuple[pa.Table, int, int]:
    """``n`` synthetic scores rows; also how many are labelled and how many right."""
    c = len(names)
    true = rng.integers(0, c, n)
    right = rng.random(n) < 0.7
    pred = np.where(right, true, (true + rng.integers(1, c, n)) % c)
    # top-5: the prediction, then 4 other distinct classes
    others = (pred[:, None] + np.arange(1, K) * rng.integers(1, c // K, n)[:, None]) % c
    in_top5 = ~right & (rng.random(n) < 0.5)      # half the wrong ones have the truth in top-5
    others[in_top5, rng.integers(0, K - 1, int(in_top5.sum()))] = true[in_top5]
    top = np.concatenate([pred[:, None], others], axis=1).ravel()
    labelled = rng.random(n) >= 0.05
    label = pc.take(names, pa.array(true))
    label = pc.if_else(pa.array(labelled), label, pa.scalar(None, pa.string()))
    prob = rng.beta(5, 2, n).astype(np.float32)
    entries = pa.StructArray.from_arrays(
        [pc.take(names, pa.array(top)), pa.array(top.astype(np.int32)),
         pa.array(np.repeat(prob, K)), pa.array(rng.normal(size=n * K).astype(np.float32))],
        fields=list(TOP_K_ENTRY))
    if logits:
        logit_values = list_array(pa.array(rng.normal(size=n * c).astype(np.float32)), n, c)
    else:
        logit_values = list_array(pa.array([], pa.float32()), n, 0)
    ids = pa.array([f"clip{i}" for i in range(first_id, first_id + n)])
    columns = {
        "clip_id": ids, "video_uri": pc.binary_join_element_wise("gs://videos/", ids, ".mp4", ""),
        "start_sec": pa.nulls(n, pa.float64()), "end_sec": pa.nulls(n, pa.float64()),
        "label": label, "num_frames": pa.array(rng.integers(64, 251, n).astype(np.int32)),
        "predicted_label": pc.take(names, pa.array(pred)),
        "predicted_index": pa.array(pred.astype(np.int32)),
        "predicted_probability": pa.array(prob),
        "top_k": list_array(entries, n, K),
        "logits": logit_values, "rgb_logits": logit_values,
        "flow_logits": pa.nulls(n, SCORES_SCHEMA.field("flow_logits").type),
        "rgb_embedding": pa.nulls(n, SCORES_SCHEMA.field("rgb_embedding").type),
        "flow_embedding": pa.nulls(n, SCORES_SCHEMA.field("flow_embedding").type),
        "row_key": ids, "run_id": pa.array(["20260101T000000Z-bench"] * n),
    }
    table = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in SCORES_SCHEMA],
                                 schema=SCORES_SCHEMA)
    return table, int(labelled.sum()), int((labelled & right).sum())


def build_run(run_dir: str, rows: int, classes: int, parts: int, logits: bool) -> tuple[int, int]:
    """Write the synthetic run; return (labelled clips, top-1 right)."""
    names = pa.array(label_map(classes))
    meta = {"streams": "rgb", "rgb_checkpoint": "default", "label_map": label_map_name(classes),
            "num_classes": classes, "version": "benchmark"}
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(run_dir, "scores"))
    os.makedirs(os.path.join(run_dir, "errors"))
    labelled = right = 0
    per_part = -(-rows // parts)
    for i in range(parts):
        n = min(per_part, rows - i * per_part)
        table, lab, ok = scores_table(n, names, rng, logits, i * per_part)
        labelled, right = labelled + lab, right + ok
        pq.write_table(table.replace_schema_metadata(
            with_run_metadata(SCORES_SCHEMA, meta).metadata),
            os.path.join(run_dir, "scores", f"scores-{i:05d}-of-{parts:05d}.parquet"),
            row_group_size=50_000)
    n_err = rows // 100
    errors = pa.table({
        "clip_id": [f"bad{i}" for i in range(n_err)],
        "video_uri": [f"gs://videos/bad{i}.mp4" for i in range(n_err)],
        "stage": rng.choice(["decode", "decode", "manifest", "inference"], n_err).tolist(),
        "error_type": rng.choice(["CorruptVideo", "NotAVideo", "VideoTooLong"], n_err).tolist(),
        "message": [f"gs://videos/bad{i}.mp4: something went wrong" for i in range(n_err)],
        "source": pa.nulls(n_err, pa.string()),
        "row_key": [f"bad{i}" for i in range(n_err)],
        "run_id": ["20260101T000000Z-bench"] * n_err}, schema=with_run_metadata(ERRORS_SCHEMA, meta))
    pq.write_table(errors, os.path.join(run_dir, "errors", "errors-00000-of-00001.parquet"))
    return labelled, right


# Runs the CLI in a fresh interpreter and prints its peak RSS: VmHWM of /proc/self/status
# belongs to the process's own address space, unlike ru_maxrss, which keeps the high-water
# mark of the forked parent (this script, holding the dataset it built) across exec.
CHILD = """
import sys
from beam_i3d.cli import main
if len(sys.argv) > 1:
    rc = main(sys.argv[1:])
else:  # the fixed cost: the modules the report imports
    import beam_i3d.report.build, beam_i3d.report.charts
    rc = 0
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]
print('PEAK_RSS_KIB', hwm)
sys.exit(rc)
"""


def timed_child(cli_args: list[str]) -> tuple[float, float, str]:
    """Run ``beam-i3d CLI_ARGS`` (just the imports if empty) in a child; wall seconds,
    peak RSS in MiB (Linux), stdout."""
    start = time.perf_counter()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", CHILD, *cli_args], capture_output=True,
                          text=True, cwd=root)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"child failed: {proc.stderr}")
    lines = proc.stdout.strip().splitlines()
    peak_kib = int(lines[-1].split()[1])
    return seconds, peak_kib / 1024, "\n".join(lines[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=400, choices=(400, 600))
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--no-logits", action="store_true",
                        help="write empty logits lists (a smaller, faster-to-build dataset)")
    parser.add_argument("--keep", metavar="DIR", help="build the run in DIR and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or os.path.join(tmp, "run")
        start = time.perf_counter()
        labelled, right = build_run(run_dir, args.rows, args.classes, args.parts,
                                    not args.no_logits)
        size = sum(os.path.getsize(os.path.join(root, f))
                   for root, _, files in os.walk(run_dir) for f in files)
        print(f"built {args.rows:,} scores rows ({args.classes} classes, "
              f"{'with' if not args.no_logits else 'without'} logits, no embeddings) in "
              f"{args.parts} files, {size / 2**20:,.0f} MiB, "
              f"in {time.perf_counter() - start:.1f} s")

        base_s, base_mib, _ = timed_child([])
        out = os.path.join(tmp, "report")
        report_s, report_mib, stdout = timed_child(["report", run_dir, "--out", out])
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        print(stdout.strip())
        print(f"imports only: {base_s:.2f} s, peak RSS {base_mib:,.0f} MiB")
        print(f"beam-i3d report: {report_s:.2f} s, peak RSS {report_mib:,.0f} MiB "
              f"({os.cpu_count()} CPUs)")
        reported = summary["scores"]["accuracy"]["top1_correct"]
        print(f"top-1 right: reported {reported:,}, true {right:,}; labelled: reported "
              f"{summary['scores']['labelled']:,}, true {labelled:,}")
        assert reported == right and summary["scores"]["labelled"] == labelled


if __name__ == "__main__":
    main()
