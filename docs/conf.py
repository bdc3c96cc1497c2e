"""Sphinx configuration of the beam-i3d manual (``docs/``).

Why Sphinx: MkDocs' last release (1.6.1) was in August 2024, over two years without one,
while Sphinx, MyST-Parser and sphinx-argparse (sphinx-doc organisation) are released
actively. sphinx-argparse renders each subcommand's options straight from our argparse
parsers (``beam_i3d.cli.build_parser``), so every option's text lives in one place, the
code. ``sphinx-build -W --keep-going -n`` (tests/test_docs.py, so CI) fails on a broken
cross-reference, a page missing from the table of contents or a bad link target. Pages are
Markdown (MyST), so the README's text moved over as it was.

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's beam_i3d, for sphinx-argparse

from beam_i3d import __version__  # noqa: E402

project = "beam-i3d"
author = "beam-i3d authors"
copyright = "beam-i3d authors, Apache-2.0"  # noqa: A001
release = version = __version__

extensions = ["myst_parser", "sphinxarg.ext"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for headings down to ####, so that pages link to sections as
# [text](page.md#a-section); a link to an anchor that does not exist is a warning.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
# Links are checked: a [text](target) that is neither a page, an anchor nor a URL warns.
myst_all_links_external = False
# sphinx-argparse's domain has no resolve_any_xref, which MyST reports for every link it
# resolves; that says nothing about our pages.
suppress_warnings = ["myst.domains"]
nitpicky = True

try:
    import furo  # noqa: F401
    html_theme = "furo"
except ImportError:  # the built-in theme if furo is not installed
    html_theme = "alabaster"
html_title = f"beam-i3d {release}"
