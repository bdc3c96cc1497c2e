#!/usr/bin/env bash
# Launch `beam-i3d score` on Google Cloud Dataflow with GPU workers (Runner v2, a custom
# worker container built from ./Dockerfile, one model per GPU).
#
#   PROJECT=my-proj REGION=us-central1 BUCKET=my-bucket \
#   IMAGE=us-central1-docker.pkg.dev/my-proj/beam/beam-i3d:0.1.0 \
#   MANIFEST='gs://my-bucket/manifests/k400_val.csv' OUTPUT=gs://my-bucket/runs/k400_val \
#   ./run_dataflow.sh [--dry-run] [--build] [more beam-i3d score options...]
#
# Settings (environment variables):
#   PROJECT, REGION, BUCKET, IMAGE, MANIFEST, OUTPUT   required
#   GPU_TYPE      accelerator type (default nvidia-l4)
#   GPU_COUNT     GPUs per worker (default 1); one model copy is loaded per GPU
#   MACHINE_TYPE  worker machine type (default: the usual match for GPU_TYPE, see below)
#   MAX_WORKERS   autoscaling cap (default 20)
#   DISK_GB       worker boot disk (default 100: the CUDA image is large)
#   JOB_NAME      Dataflow job name (default beam-i3d-<UTC time>)
# Options:
#   --dry-run     check everything that needs no cloud account (settings, the image's
#                 Dockerfile, our options, Beam's Dataflow options, the pipeline graph)
#                 and print the launch command; launch nothing
#   --build       build and push IMAGE first (docker build + docker push)
# Other arguments go to `beam-i3d score` (e.g. --streams rgb,flow --flow-checkpoint
# gs://my-bucket/ckpt/flow_imagenet --video-template ... --ignore-times --skip-existing).
set -euo pipefail
cd "$(dirname "$0")"

DRY_RUN=0; BUILD=0; PASS=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --build) BUILD=1 ;;
    *) PASS+=("$arg") ;;
  esac
done

fail() { echo "run_dataflow.sh: $*" >&2; exit 2; }
missing=()
for var in PROJECT REGION BUCKET IMAGE MANIFEST OUTPUT; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
[ ${#missing[@]} -eq 0 ] || fail "set ${missing[*]} (see the comment at the top of this script)"
[[ "$BUCKET" != gs://* && "$BUCKET" != */* ]] || fail "BUCKET is a bucket name, e.g. my-bucket (got $BUCKET)"
[[ "$MANIFEST" == gs://* ]] || fail "MANIFEST must be on gs:// for Dataflow workers to read it (got $MANIFEST)"
[[ "$OUTPUT" == gs://* ]] || fail "OUTPUT must be on gs:// (got $OUTPUT)"
[[ "$IMAGE" == */* ]] || fail "IMAGE must be a registry path, e.g. REGION-docker.pkg.dev/PROJECT/REPO/beam-i3d:TAG"

GPU_TYPE="${GPU_TYPE:-nvidia-l4}"
GPU_COUNT="${GPU_COUNT:-1}"
[[ "$GPU_COUNT" =~ ^[1-9][0-9]*$ ]] || fail "GPU_COUNT must be a positive integer"
case "$GPU_TYPE" in
  nvidia-l4)          default_machine="g2-standard-$((8 * GPU_COUNT))" ;;
  nvidia-tesla-t4)    default_machine="n1-standard-$((8 * GPU_COUNT))" ;;
  nvidia-tesla-v100)  default_machine="n1-standard-$((8 * GPU_COUNT))" ;;
  nvidia-tesla-a100)  default_machine="a2-highgpu-${GPU_COUNT}g" ;;
  nvidia-a100-80gb)   default_machine="a2-ultragpu-${GPU_COUNT}g" ;;
  nvidia-h100-80gb)   default_machine="a3-highgpu-${GPU_COUNT}g" ;;
  *) [ -n "${MACHINE_TYPE:-}" ] || fail "unknown GPU_TYPE $GPU_TYPE: set MACHINE_TYPE too" ;;
esac
MACHINE_TYPE="${MACHINE_TYPE:-$default_machine}"
MAX_WORKERS="${MAX_WORKERS:-20}"
DISK_GB="${DISK_GB:-100}"
JOB_NAME="${JOB_NAME:-beam-i3d-$(date -u +%Y%m%d-%H%M%S)}"
[ -f Dockerfile ] || fail "Dockerfile missing"

ARGS=(
  score --manifest "$MANIFEST" --output "$OUTPUT" --model-copies "$GPU_COUNT"
  "${PASS[@]+"${PASS[@]}"}"
  --runner DataflowRunner --project "$PROJECT" --region "$REGION" --job_name "$JOB_NAME"
  --temp_location "gs://$BUCKET/beam-i3d/tmp" --staging_location "gs://$BUCKET/beam-i3d/staging"
  --experiments use_runner_v2 --sdk_container_image "$IMAGE" --sdk_location container
  --dataflow_service_options "worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver"
  --machine_type "$MACHINE_TYPE" --max_num_workers "$MAX_WORKERS" --disk_size_gb "$DISK_GB"
)

if [ "$DRY_RUN" = 1 ]; then
  source scripts/bootstrap.sh
  "$VENV_PY" -m beam_i3d "${ARGS[@]}" --dry-run
  printf 'would run:'; printf ' %q' beam-i3d "${ARGS[@]}"; echo
  exit 0
fi

if [ "$BUILD" = 1 ]; then
  docker build -t "$IMAGE" .
  docker push "$IMAGE"
fi
source scripts/bootstrap.sh
exec "$VENV_PY" -m beam_i3d "${ARGS[@]}"
