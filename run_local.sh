#!/usr/bin/env bash
# Run the scoring job with Beam's DirectRunner, then print clip -> top-5 labels read back
# from the Parquet output. Sets up .venv and the default weights on first use.
#
#   ./run_local.sh                                  # the bundled sample -> output/sample
#   ./run_local.sh MANIFEST OUTPUT [options...]     # your manifest; extra arguments go to
#                                                   # `beam-i3d score` (ours and Beam's)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh

if [ $# -eq 0 ]; then
  OUTPUT=output/sample
  SAMPLE="$PWD/beam_i3d/data/samples/v_CricketShot_g04_c01.mp4"
  rm -rf "$OUTPUT"
  mkdir -p "$OUTPUT"
  MANIFEST="$OUTPUT/manifest.csv"
  # The release's sample clip (UCF101 v_CricketShot_g04_c01, 79 frames), whole and its
  # first 1.6 s.
  cat > "$MANIFEST" <<CSV
clip_id,video_uri,start_sec,end_sec,label
cricket_whole,$SAMPLE,,,playing cricket
cricket_first_1.6s,$SAMPLE,0,1.6,playing cricket
CSV
  set -- "$MANIFEST" "$OUTPUT" --direct_num_workers 2 --direct_running_mode multi_threading
elif [ $# -lt 2 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi

MANIFEST="$1"; OUTPUT="$2"; shift 2
"$VENV_PY" -m beam_i3d score --manifest "$MANIFEST" --output "$OUTPUT" "$@"
case "$OUTPUT" in
  *://*) echo "output written to $OUTPUT (read it with: beam-i3d report $OUTPUT)" ;;
  *) "$VENV_PY" scripts/print_top5.py "$OUTPUT" ;;
esac
