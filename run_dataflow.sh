#!/usr/bin/env bash
# Launch `beam-i3d score` on Google Cloud Dataflow (Runner v2, a custom worker container
# built from ./Dockerfile): GPU workers by default, or CPU workers with GPU_TYPE=none.
#
#   PROJECT=my-proj REGION=us-central1 BUCKET=my-bucket \
#   IMAGE=us-central1-docker.pkg.dev/my-proj/beam/beam-i3d:0.1.0 \
#   MANIFEST='gs://my-bucket/manifests/k400_val.csv' OUTPUT=gs://my-bucket/runs/k400_val \
#   ./run_dataflow.sh [--dry-run] [--build] [more beam-i3d score options...]
#
# The FVD job instead (`beam-i3d fvd`): COMMAND=fvd with REAL (and FAKE) instead of
# MANIFEST, each a gs:// manifest or statistics file:
#   COMMAND=fvd REAL=gs://b/ref/k600/stats/real.npz FAKE='gs://b/gen/run7.csv' \
#   OUTPUT=gs://b/fvd/run7 PROJECT=... ./run_dataflow.sh [--dry-run] [fvd options...]
#
# Settings (environment variables):
#   PROJECT, REGION, BUCKET, IMAGE, MANIFEST, OUTPUT   required (fvd: REAL, not MANIFEST)
#   COMMAND       score (default) or fvd; FAKE (optional) for fvd
#   GPU_TYPE      accelerator type (default nvidia-l4); `none`: CPU workers, no GPU
#   GPU_COUNT     GPUs per worker (default 1); one model copy is loaded per GPU
#   MACHINE_TYPE  worker machine type (default: the usual match for GPU_TYPE, see below;
#                 n2-standard-8 for GPU_TYPE=none)
#   MAX_WORKERS   autoscaling cap (default 20)
#   DISK_GB       worker boot disk (default 100: the CUDA image is large)
#   JOB_NAME      Dataflow job name (default beam-i3d-<UTC time>)
#   DECODE_PROCESSES  decoding child processes per SDK process (default 1: Dataflow
#                 already runs one SDK process per vCPU)
#   MPS           NVIDIA MPS on the GPU: auto (default: on for one GPU when the flow
#                 stream runs TV-L1 on it, i.e. many processes use the GPU), 1 or 0
# Options:
#   --dry-run     check everything that needs no cloud account (settings, the image's
#                 Dockerfile, our options, Beam's Dataflow options, the pipeline graph)
#                 and print the launch command; launch nothing
#   --build       build and push IMAGE first (docker build + docker push)
# Other arguments go to `beam-i3d score` (e.g. --streams rgb,flow --flow-checkpoint
# gs://my-bucket/ckpt/flow_imagenet --video-template ... --ignore-times --skip-existing)
# and to Beam (e.g. --service_account_email, --network, --subnetwork); they come after
# this script's defaults, so they override them.
#
# Process model (docs/dataflow.md): one SDK process per vCPU (Dataflow's
# default), each decoding through DECODE_PROCESSES child processes; one I3D model per
# GPU (--model-copies) in its own process, shared by the SDK processes; --require-gpu
# fails the job if a worker's TensorFlow sees no GPU.
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
COMMAND="${COMMAND:-score}"
[[ "$COMMAND" =~ ^(score|fvd)$ ]] || fail "COMMAND must be score or fvd (got $COMMAND)"
if [ "$COMMAND" = fvd ]; then INPUTS=(REAL); else INPUTS=(MANIFEST); fi
missing=()
for var in PROJECT REGION BUCKET IMAGE "${INPUTS[@]}" OUTPUT; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
[ ${#missing[@]} -eq 0 ] || fail "set ${missing[*]} (see the comment at the top of this script)"
[[ "$BUCKET" != gs://* && "$BUCKET" != */* ]] || fail "BUCKET is a bucket name, e.g. my-bucket (got $BUCKET)"
if [ "$COMMAND" = fvd ]; then
  for var in REAL FAKE; do
    [ -z "${!var:-}" ] || [[ "${!var}" == gs://* ]] || fail "$var must be on gs:// for Dataflow workers to read it (got ${!var})"
  done
else
  [[ "$MANIFEST" == gs://* ]] || fail "MANIFEST must be on gs:// for Dataflow workers to read it (got $MANIFEST)"
fi
[[ "$OUTPUT" == gs://* ]] || fail "OUTPUT must be on gs:// (got $OUTPUT)"
[[ "$IMAGE" == */* ]] || fail "IMAGE must be a registry path, e.g. REGION-docker.pkg.dev/PROJECT/REPO/beam-i3d:TAG"

GPU_TYPE="${GPU_TYPE:-nvidia-l4}"
GPU_COUNT="${GPU_COUNT:-1}"
[[ "$GPU_COUNT" =~ ^[1-9][0-9]*$ ]] || fail "GPU_COUNT must be a positive integer"
DECODE_PROCESSES="${DECODE_PROCESSES:-1}"
[[ "$DECODE_PROCESSES" =~ ^[1-9][0-9]*$ ]] || fail "DECODE_PROCESSES must be a positive integer"
MPS="${MPS:-auto}"
[[ "$MPS" =~ ^(auto|0|1)$ ]] || fail "MPS must be auto, 1 or 0 (got $MPS)"
case "$GPU_TYPE" in
  none)               default_machine="n2-standard-8" ;;
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
if [ "$BUILD" = 1 ] && ! command -v docker >/dev/null 2>&1; then
  fail "--build needs docker, which is not on PATH: install Docker, or build IMAGE with Cloud Build (gcloud builds submit --tag \$IMAGE .) and run without --build"
fi

# The streams and flow backend asked for (last one wins, as in argparse).
streams=rgb; flow_backend=tf; prev=
for arg in "${PASS[@]+"${PASS[@]}"}"; do
  case "$prev" in --streams) streams="$arg" ;; --flow-backend) flow_backend="$arg" ;; esac
  case "$arg" in --streams=*) streams="${arg#*=}" ;; --flow-backend=*) flow_backend="${arg#*=}" ;; esac
  prev="$arg"
done
flow_on_gpu=0
[[ "$streams" == *flow* && "$flow_backend" == tf && "$GPU_TYPE" != none ]] && flow_on_gpu=1

# Our defaults first, so that the caller's arguments (after them) override them.
OURS=(--decode-processes "$DECODE_PROCESSES")
if [ "$GPU_TYPE" = none ]; then
  # CPU workers: one model per machine, whose TensorFlow uses all its cores.
  OURS+=(--model-copies 1)
  WORKER=()
else
  accelerator="worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver"
  if [ "$MPS" = 1 ] || { [ "$MPS" = auto ] && [ "$flow_on_gpu" = 1 ] && [ "$GPU_COUNT" = 1 ]; }; then
    [ "$GPU_COUNT" = 1 ] || fail "MPS=1 needs GPU_COUNT=1 (Dataflow supports MPS on one-GPU workers only)"
    accelerator+=";use_nvidia_mps"
  fi
  OURS+=(--model-copies "$GPU_COUNT" --require-gpu)
  # TV-L1 in every SDK process: 16 pairs (about 0.4 GB) each, 8 processes on one GPU.
  [ "$flow_on_gpu" = 1 ] && OURS+=(--flow-batch-pairs 16)
  WORKER=(--dataflow_service_options "$accelerator")
fi

if [ "$COMMAND" = fvd ]; then
  # fvd reads clips in decoding children as score does, and runs no flow.
  OURS=(--decode-processes "$DECODE_PROCESSES" --model-copies "$( [ "$GPU_TYPE" = none ] && echo 1 || echo "$GPU_COUNT" )")
  [ "$GPU_TYPE" = none ] || OURS+=(--require-gpu)
  FIRST=(fvd --real "$REAL")
  [ -z "${FAKE:-}" ] || FIRST+=(--fake "$FAKE")
else
  FIRST=(score --manifest "$MANIFEST")
fi
ARGS=(
  "${FIRST[@]}" --output "$OUTPUT" "${OURS[@]}"
  "${PASS[@]+"${PASS[@]}"}"
  --runner DataflowRunner --project "$PROJECT" --region "$REGION" --job_name "$JOB_NAME"
  --temp_location "gs://$BUCKET/beam-i3d/tmp" --staging_location "gs://$BUCKET/beam-i3d/staging"
  --experiments use_runner_v2 --sdk_container_image "$IMAGE" --sdk_location container
  "${WORKER[@]+"${WORKER[@]}"}"
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
