# Worker image for Dataflow GPU workers (see run_dataflow.sh).
#
# The Beam SDK image of the same Python and Beam version as the launcher, plus
# TensorFlow with CUDA (pip's NVIDIA wheels; Dataflow installs the driver on the host
# with install-nvidia-driver), PyAV (its own FFmpeg), OpenCV with contrib (TV-L1),
# OpenVINO (the CPU model backend, a requirement in setup.py), and beam-i3d with the
# default weights already converted (for OpenVINO too), so workers fetch nothing.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION

ENV BEAM_I3D_CACHE_DIR=/opt/beam-i3d/cache \
    BEAM_I3D_OPENVINO_CACHE=/opt/beam-i3d/openvino \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/beam-i3d/src
COPY setup.py README.md ./
COPY beam_i3d ./beam_i3d
COPY model ./model
COPY schemas ./schemas

# tensorflow[and-cuda] brings the CUDA/cuDNN user-space libraries as wheels.
RUN pip install "tensorflow[and-cuda]>=2.21,<2.22" "apache-beam[gcp]==${BEAM_VERSION}" . \
 && python -m model.default_weights \
 && python -c "from beam_i3d.job.backends import OpenVINOBackend; from model.export import build_model; OpenVINOBackend(build_model('default'))" \
 && python -c "import av, cv2, openvino, tensorflow as tf; cv2.optflow.DualTVL1OpticalFlow_create(); print('ok', tf.__version__, av.__version__, cv2.__version__, openvino.get_version())"

# The Beam SDK image's own entrypoint (/opt/apache/beam/boot) starts the worker.
