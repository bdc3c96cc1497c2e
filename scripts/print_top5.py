"""Print clip -> top-5 labels with probabilities, read back from a run's Parquet output.

    python scripts/print_top5.py OUTPUT_DIR
"""

import glob
import os
import sys

import pyarrow.parquet as pq


def main(output: str) -> int:
    files = sorted(glob.glob(os.path.join(output, "scores", "*.parquet")))
    rows = [r for f in files for r in pq.read_table(
        f, columns=["clip_id", "video_uri", "start_sec", "end_sec", "num_frames", "top_k"]
    ).to_pylist()]
    errors = [r for f in sorted(glob.glob(os.path.join(output, "errors", "*.parquet")))
              for r in pq.read_table(f, columns=["clip_id", "error_type", "message"]).to_pylist()]
    print(f"\n{len(rows)} clips scored, {len(errors)} errors  ({output})\n")
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        span = ""
        if row["start_sec"] is not None or row["end_sec"] is not None:
            end = "end" if row["end_sec"] is None else f"{row['end_sec']:g}s"
            span = f" [{row['start_sec'] or 0:g}s, {end})"
        print(f"{row['clip_id']}{span}  ({row['num_frames']} frames, "
              f"{os.path.basename(row['video_uri'])})")
        for rank, entry in enumerate(row["top_k"][:5], start=1):
            print(f"  {rank}. {entry['probability']:8.4f}  {entry['label']}")
    for e in errors:
        print(f"error: {e['clip_id']}: {e['error_type']}: {e['message']}")
    return 0 if rows or errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
