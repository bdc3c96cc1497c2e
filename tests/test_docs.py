"""The manual (docs/) builds strictly, as CI builds it: ``sphinx-build -W --keep-going -n``,
so a broken link, a missing anchor or a page in no table of contents fails the suite; and
its options reference is generated from the command's own parsers."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from beam_i3d import cli

ROOT = Path(__file__).resolve().parent.parent


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(source), str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_manual_builds_without_a_warning_and_documents_every_option(tmp_path):
    done = sphinx_build(ROOT / "docs", tmp_path)
    assert done.returncode == 0, f"sphinx-build warned:\n{done.stderr[-6000:]}"
    parser = cli.build_parser()
    for name, sub in parser.subcommand_parsers.items():
        page = (tmp_path / "commands" / f"{name}.html").read_text()
        assert 'id="options"' in page, f"docs/commands/{name}.md has no Options section"
        reference = page[page.index('id="options"'):]
        for option in cli.option_names(sub):
            assert f">{option}" in reference, (name, option)
    # The help text is shown as --help prints it (not read as reStructuredText).
    score = (tmp_path / "commands" / "score.html").read_text()
    assert "DIR/scores/*.parquet and DIR/errors/*.parquet" in score


def test_a_broken_link_an_unknown_anchor_or_an_orphan_page_fails_the_build(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "docs", tree / "docs", ignore=shutil.ignore_patterns("_build"))
    (tree / "benchmarks").symlink_to(ROOT / "benchmarks")
    faq = tree / "docs" / "faq.md"
    faq.write_text(faq.read_text() + "\nSee [nowhere](no-such-page.md) and "
                   "[a section](fidelity.md#no-such-section).\n")
    (tree / "docs" / "orphan.md").write_text("# In no toctree\n")
    done = sphinx_build(tree / "docs", tmp_path / "html")
    assert done.returncode != 0
    assert "no-such-page" in done.stderr, done.stderr
    assert "no-such-section" in done.stderr, done.stderr
    assert "orphan" in done.stderr and "toctree" in done.stderr, done.stderr
