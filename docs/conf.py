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

import argparse
import re
import sys
from pathlib import Path

import sphinxarg.ext

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
smartquotes = False  # --window stays two hyphens, quotes stay as typed

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


# The options reference (each commands/*.md's "Options") is sphinx-argparse's rendering of
# beam_i3d.cli.build_parser(), used with :nodefault: since our help texts state their
# defaults. Two adjustments, made to what sphinx-argparse reads from the parser: help texts
# are plain text, as --help prints them (sphinx-argparse parses them as reStructuredText,
# where DIR/scores/*.parquet would turn into emphasis), and each option is shown with its
# metavar (--top-k K), as in --help.
def _plain(text):
    return re.sub(r"([\\`*_|])", r"\\\1", text) if text else text


def _metavars(parser, found=None):
    found = {} if found is None else found
    for action in parser._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
            for sub in action.choices.values():
                _metavars(sub, found)
        elif action.option_strings and action.nargs != 0:
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}" if action.choices
                else action.dest.upper())
            for option in action.option_strings:
                found[option] = metavar
    return found


def _as_help_prints_it(parse):
    def parse_parser(parser, data=None, **kwargs):
        metavars = _metavars(parser)
        result = parse(parser, data, **kwargs)

        def adjust(node):
            for key in ("description", "epilog", "help"):
                if node.get(key):
                    node[key] = _plain(node[key])
            for group in node.get("action_groups", []):
                group["description"] = _plain(group.get("description"))
                for option in group["options"]:
                    option["help"] = _plain(option["help"])
                    option["name"] = [f"{n} {metavars[n]}" if n in metavars else n
                                      for n in option["name"]]
            for child in node.get("children", []):
                adjust(child)

        adjust(result)
        return result
    return parse_parser


sphinxarg.ext.parse_parser = _as_help_prints_it(sphinxarg.ext.parse_parser)

try:
    import furo  # noqa: F401
    html_theme = "furo"
except ImportError:  # the built-in theme if furo is not installed
    html_theme = "alabaster"
html_title = f"beam-i3d {release}"
