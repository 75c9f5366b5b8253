"""The README starts with the three commands a new user needs and stays short; every relative link in the README
and the docs pages points at a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page (lower case, punctuation dropped, spaces to hyphens)."""
    out, fence = set(), False
    for line in page.read_text().splitlines():
        fence ^= line.startswith("```")
        if not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_the_readme_starts_with_install_demo_and_tests_and_stays_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 250, len(lines)
    first_screen = "\n".join(lines[:45])
    for must in ("cd ComfyUI/custom_nodes", "git clone", "pip install -r comfyui-fashionchameleon/requirements.txt",
                 "demo_live", "cd ComfyUI/custom_nodes/comfyui-fashionchameleon", "python -m pytest -q"):
        assert must in first_screen, must
    assert "python -m pytest -q" in lines  # the test command, exactly, on a line of its own (CI runs it)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), (page.name, target)
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), (page.name, target, sorted(_anchors(file)))


def _tracked_text_files() -> list[Path]:
    skip = {".git", ".venv", "__pycache__", "data"}
    return [p for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".json", ".toml", ".yml", ".txt")
            and not skip & set(p.relative_to(REPO).parts) and p.is_file()]


def test_nothing_refers_to_files_the_repository_does_not_contain():
    """The repository documents its own design (docs/design.md); a clone has nothing beside it."""
    outside = ("DESIGN.md", "STYLE.md", "shared/reference", "FASHIONCHAMELEON.md")
    found = [f"{p.relative_to(REPO)}: {word}" for p in _tracked_text_files()
             for word in outside if word in p.read_text(errors="replace") and p.name != "test_docs.py"]
    assert not found, found


def test_the_layout_page_names_every_module():
    """docs/layout.md matches the tree: every module of the core, its tools and checkpoints, and the nodes is named."""
    layout = (REPO / "docs" / "layout.md").read_text()
    folders = ["chameleon_core", "chameleon_core/tools", "chameleon_core/checkpoints", "nodes", "nodes/adapters"]
    modules = [p for folder in folders for p in sorted((REPO / folder).glob("*.py")) if not p.stem.startswith("__")]
    missing = [str(p.relative_to(REPO)) for p in modules if not re.search(rf"\b{p.stem}\b", layout)]
    assert not missing, missing
    for folder in ("world/", "eval/", "training/", "tools/", "checkpoints/", "adapters/", "tests/data", "web/js/",
                   "workflows/", "demo/"):
        assert folder in layout, folder
