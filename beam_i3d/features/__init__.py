"""``beam-i3d features``: a score run's embeddings as one array per video, in the layout
research code reads (see :mod:`beam_i3d.features.command`)."""
