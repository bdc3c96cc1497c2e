"""beam-i3d: batch scoring of video with DeepMind's I3D on Apache Beam."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("BEAM_I3D_QUIET") == "1":
    # Set by the launcher unless --verbose: worker processes it starts filter
    # TensorFlow's native start-up lines too (see beam_i3d.cli.quiet).
    from beam_i3d.cli.quiet import install_import_filter as _install

    _install()
