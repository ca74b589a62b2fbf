"""The documentation in the repository: every relative link in README.md and docs/*.md resolves
to a file of the repository, the README points into docs/ (not to a document outside the
repository), the LICENSE matches pyproject's declaration, and docs/rules-table.md is what
scripts/rules_doc.py renders from the registry and the ledger now."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
# [text](target) and [text]: target; images too. Code spans are removed first.
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.M)
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def _links(page: Path) -> list[str]:
    text = _CODE.sub("", page.read_text())
    return [a or b for a, b in _LINK.findall(text)]


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#")


def test_the_docs_exist():
    names = {p.name for p in DOCS}
    assert {"user-guide.md", "architecture.md", "rules.md", "cost-models.md"} <= names
    assert {"limitations.md", "rules-table.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_to_a_file_in_the_repository(page):
    links = [t for t in _links(page) if _relative(t)]
    assert links or page.name == "rules-table.md", f"{page.name} links nowhere"
    bad = []
    for target in links:
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    assert bad == [], f"{page.name}: links that resolve to nothing in the repository: {bad}"


def test_the_link_reader_sees_links_and_skips_code():
    page = "see [a](docs/a.md) and [b](https://x.y/z) `[c](no.md)`\n[d]: ../e.md\n"
    assert [t for t, _ in [(a or b, 0) for a, b in _LINK.findall(_CODE.sub("", page))]] == [
        "docs/a.md",
        "https://x.y/z",
        "../e.md",
    ]
    assert not _relative("https://x.y/z") and not _relative("#anchor") and _relative("a.md")


def test_the_readme_points_into_docs_and_not_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text and "ARCHITECTURE.md" not in text
    for page in DOCS:
        assert f"docs/{page.name}" in text, f"README does not link docs/{page.name}"


def test_the_license_is_the_one_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License") and "eqsat authors" in text


def test_the_rule_table_is_current():
    spec = importlib.util.spec_from_file_location("rules_doc", ROOT / "scripts" / "rules_doc.py")
    rules_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules_doc)
    assert rules_doc.TARGET.read_text() == rules_doc.render(), (
        "docs/rules-table.md is out of date: run python scripts/rules_doc.py"
    )
