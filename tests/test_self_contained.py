"""A clone runs on its own: nothing the repository runs reads a folder beside it.

The team's machines keep a `shared/` folder next to the checkout (the image corpus, the design);
a user's clone has none. The images the tests and the bench need live in `tests/images/`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import CORPUS, ROOT

# `../shared`, or a path joined with a "shared" segment, as `parent / "shared"` wrote it.
SIBLING_SHARED = re.compile(r"""\.\./shared\b|/\s*["']shared["']""")
RUN_BY_THE_REPOSITORY = ["app", "bench", "tests", "docker", ".ci", "Makefile", "pyproject.toml"]
IMAGE_SUFFIXES = {".jpg", ".png", ".heic", ".avif", ".webp", ".gif", ".svg", ".tif", ".pdf", ".ico"}


def files_run_by_the_repository() -> list[Path]:
    paths: list[Path] = []
    for name in RUN_BY_THE_REPOSITORY:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        paths += [p for p in candidates if p.is_file() and p.suffix not in IMAGE_SUFFIXES]
    return [p for p in paths if p != Path(__file__)]  # this file's examples must match


@pytest.mark.parametrize(
    "line",
    [
        'CORPUS = ROOT.parent / "shared" / "corpus" / "images"',
        "test -d ../shared/corpus || echo missing",
        "photo = (ROOT.parent / 'shared' / 'corpus' / 'sample.jpg').read_bytes()",
    ],
)
def test_the_check_recognises_a_path_to_a_sibling_shared_folder(line: str) -> None:
    assert SIBLING_SHARED.search(line)


@pytest.mark.parametrize(
    "line", ["a shared limit would need shared state", "DB_MAX_CONNECTIONS shared by every process"]
)
def test_the_check_lets_the_word_shared_be(line: str) -> None:
    assert not SIBLING_SHARED.search(line)


def test_nothing_the_repository_runs_names_a_shared_folder_beside_it() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files_run_by_the_repository()
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if SIBLING_SHARED.search(line)
    ]
    assert offenders == []


def test_the_images_the_tests_use_are_in_the_repository_with_their_provenance() -> None:
    assert CORPUS.is_relative_to(ROOT)
    readme = (CORPUS / "README.md").read_text()
    assert "LGPL-2.1" in readme
    images = [p for p in CORPUS.rglob("*") if p.suffix in IMAGE_SUFFIXES]
    in_a_listed_folder = [p for p in images if p.parent != CORPUS and f"{p.parent.name}/" in readme]
    unlisted = [p for p in images if p.name not in readme and p not in in_a_listed_folder]
    assert images
    assert unlisted == []
    assert sum(p.stat().st_size for p in images) < 12_000_000
