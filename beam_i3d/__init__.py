"""beam-i3d: batch scoring of video with DeepMind's I3D on Apache Beam."""

__version__ = "0.1.0"
