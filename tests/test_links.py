"""Every image and every relative link of the README and the docs resolves to a file of
the repository (committed, not only present on this machine), and the published tree
stays small."""

import re
import subprocess
from pathlib import Path

import pytest

from pyro_vae.cli.published import pages

ROOT = Path(__file__).resolve().parents[1]
#: what the docs may weigh in all: the pages, their figures and the published results
MAX_PUBLISHED_BYTES = 10 * 2**20
#: ``[text](target)``, ``![alt](target)`` and ``<img src="target">``
LINK = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img [^>]*src=\"([^\"]+)\""
)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def links(page: Path) -> list[str]:
    """The link and image targets of a Markdown page, outside code."""
    text = CODE.sub("", page.read_text())
    return [a or b for a, b in LINK.findall(text)]


def local(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:|#", target)


def tracked() -> set[Path] | None:
    """The files git knows in this checkout (None outside a clone)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {(ROOT / name).resolve() for name in out.split("\0") if name}


def test_the_link_pattern_finds_links_and_images_outside_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        '![a figure](results/x/f.png) and [a page](guide.md#runs), <img src="i.png" width=2>,'
        " [web](https://pyro.ai), `[not](code.md)`\n```\n![no](block.png)\n```\n"
    )
    assert links(page) == ["results/x/f.png", "guide.md#runs", "i.png", "https://pyro.ai"]
    assert [local(t) for t in links(page)] == [True, True, True, False]


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_image_and_relative_link_resolves_to_a_committed_file(page):
    known = tracked()
    missing = []
    for target in filter(local, links(page)):
        file = (page.parent / target.split("#")[0]).resolve()
        if not file.is_file() or (known is not None and file not in known):
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to files the repository lacks: {missing}"


def test_every_page_has_its_figures():
    # the experiment pages show figures; a page that lost them all is a broken page
    figures = {p.name: [t for t in links(p) if t.endswith(".png")] for p in pages(ROOT)}
    assert all(figures[name] for name in ("ring.md", "priors.md", "results.md"))


def test_the_published_tree_is_small():
    docs = sum(f.stat().st_size for f in (ROOT / "docs").rglob("*") if f.is_file())
    assert docs < MAX_PUBLISHED_BYTES, f"docs/ holds {docs / 2**20:.1f} MB"
