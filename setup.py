"""beam-i3d: batch scoring of video with DeepMind's I3D on Apache Beam."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "beam_i3d" / "__init__.py").read_text()).group(1)

setup(
    name="beam-i3d",
    version=VERSION,
    description="Score video corpora with DeepMind's I3D (Kinetics) on Apache Beam / Dataflow",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    # Namespace packages too: the data directories (beam_i3d.data.samples, model.data)
    # hold no __init__.py but are installed, so they are declared as packages with
    # their files as package data (else setuptools warns "Package would be ignored").
    packages=find_namespace_packages(include=["beam_i3d", "beam_i3d.*", "model", "model.*",
                                              "schemas", "schemas.*"],
                                     exclude=["*.__pycache__"]),
    package_data={"model.data": ["*.txt", "LICENSE.*"],
                  "beam_i3d.data.samples": ["*.mp4"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        # --model-backend openvino (auto's choice on CPUs); beam_i3d.job.backends
        "openvino>=2026.4,<2026.5",
        "apache-beam[gcp]>=2.77,<2.78",
        "numpy>=1.26,<3",
        "pyarrow>=14",
        "google-cloud-storage>=2.14,<4",
        "av>=14,<19",
        "opencv-contrib-python-headless>=4.8,<6",
        "matplotlib>=3.8,<4",
        "h5py>=3.10",  # beam-i3d features --format hdf5 (TensorFlow needs it too)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pillow>=10",
            "gcp-storage-emulator>=2024.8",
            "duckdb>=1.3",
            "pandas>=2.0",
            "hypothesis>=6.100",
        ],
        # The manual in docs/ (tests/test_docs.py builds it strictly). Sphinx rather than
        # MkDocs: MkDocs' last release (1.6.1) was in Aug 2024, over two years without one,
        # while Sphinx, MyST-Parser and sphinx-argparse (sphinx-doc org) are released
        # actively; sphinx-argparse renders the options reference from our argparse
        # parsers (one place for each option's text), and sphinx-build -W -n --keep-going
        # fails on a broken cross-reference, a page missing from the toctree or a bad link
        # target. Pages are Markdown (MyST).
        "docs": [
            "sphinx>=8",
            "myst-parser>=4",
            "sphinx-argparse>=0.5",
            "furo>=2024.8",
        ],
        # A workstation's or a GPU worker's TensorFlow with its CUDA libraries (README,
        # "One machine, several GPUs"); the Dockerfile installs the same.
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["beam-i3d=beam_i3d.cli:console_main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
