"""Every document the project points a reader to is in this repository (docs/design.md, "Conventions for contributors").

- A comment, docstring, config or page that names a Markdown file names one the repository holds.
- A section cited by number (``<page>.md §3.1``) or by its heading in quotes, after a page or after README, exists.
- Every relative link in the README and under docs/ reaches an existing file, and the heading its ``#anchor`` names.
- The README stays a front door: every page of docs/ is one click away from it, and it stays short.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_SUFFIXES = (".py", ".md", ".yaml", ".toml")
README_MAX_BYTES = 15_000

# Markdown files the code writes into run and sweep directories: names of outputs, not documents of this repository.
GENERATED_OUTPUTS = frozenset({
    "summary.md",  # the sweep summary table (mu_lightning/tracking/report/, scripts/report.py)
})

MD_NAME = r"[\w./-]*[A-Za-z0-9_-]+\.md"
NAMED_DOC = re.compile(rf"\b{MD_NAME}\b")
SECTION_NUMBERS = re.compile(rf"(?P<doc>\b{MD_NAME})\b(?P<refs>(?:\s*(?:,|and)?\s*§\s*\d+(?:\.\d+)*)+)")
# a heading title in quotes may wrap once onto the next line of a comment or docstring
QUOTED_SECTION = re.compile(
    rf"(?P<doc>\b{MD_NAME}|\bREADME(?:'s)?)\b,?\s+\"(?P<title>[^\"\n]+(?:\n[ \t#]*[^\"\n]+)?)\"")
LINK = re.compile(r"\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
# "OPTML-Group/Unlearn-Saliency Classification/README.md": a file of a public GitHub repository named just before it,
# which a reader can open; the owner/repository token must not be a path of this repository
PUBLIC_REPO = re.compile(r"(?P<repo>\b[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@[0-9a-f]{7,40})?\s+$")


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.what}"


@cache
def repository_files() -> frozenset[str]:
    """Tracked files and untracked files git does not ignore, as paths relative to the root, that exist on disk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    return frozenset(p for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def markdown_files(files: Iterable[str]) -> dict[str, list[str]]:
    """Basename -> paths of the repository's Markdown files."""
    found: dict[str, list[str]] = {}
    for path in files:
        if path.endswith(".md"):
            found.setdefault(posixpath.basename(path), []).append(path)
    return found


def resolve(name: str, source: str, files: frozenset[str]) -> str | None:
    """The repository path a document name refers to, or None.

    A name with a slash is a path, from the repository root or (as Markdown links are) from the citing file's
    folder; a bare name must be the basename of exactly one Markdown file of the repository.
    """
    if "/" in name:
        for base in ("", posixpath.dirname(source)):
            path = posixpath.normpath(posixpath.join(base, name))
            if path in files:
                return path
        return None
    paths = markdown_files(files).get(name, [])
    return paths[0] if len(paths) == 1 else None


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def scanned_files(files: frozenset[str]) -> list[str]:
    return sorted(p for p in files if p.endswith(SCANNED_SUFFIXES))


def missing_documents(text: str, source: str, files: frozenset[str]) -> Iterator[Problem]:
    """Markdown files named in ``text`` that the repository does not hold (web addresses are left alone)."""
    text = URL.sub(lambda m: " " * len(m.group()), text)  # keeps offsets, hence line numbers
    for m in NAMED_DOC.finditer(text):
        name = m.group()
        if posixpath.basename(name) in GENERATED_OUTPUTS:
            continue  # an output, wherever it is written (``f"{out}/summary.md"``, ``"%s/summary.md"``)
        if "/" not in name and len(markdown_files(files).get(name, [])) > 1:
            continue  # several pages of that name: the name is in the repository, whichever is meant
        repo = PUBLIC_REPO.search(text[text.rfind("\n", 0, m.start()) + 1 : m.start()])
        if repo and not any(f.startswith(repo["repo"] + "/") or f == repo["repo"] for f in files):
            continue  # a file of the public repository named just before it
        if resolve(name, source, files) is None:
            yield Problem(source, line_of(text, m.start()), f"names {name}, which is not in the repository")


def heading_texts(path: str) -> list[str]:
    text = FENCE.sub("", (ROOT / path).read_text(encoding="utf-8"))
    return [m.group("text").replace("`", "").strip() for m in HEADING.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for text in heading_texts(path):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def missing_sections(text: str, source: str, files: frozenset[str]) -> Iterator[Problem]:
    """``<page>.md §N`` with no heading numbered N, ``<page>.md, "Title"`` with no heading of that title."""
    text = URL.sub(lambda m: " " * len(m.group()), text)
    for m in SECTION_NUMBERS.finditer(text):
        path = resolve(m.group("doc"), source, files)
        if path is None:
            continue  # missing_documents reports it
        numbers = {re.match(r"(\d+(?:\.\d+)*)", h).group(1) for h in heading_texts(path) if re.match(r"\d", h)}
        for ref in re.findall(r"§\s*(\d+(?:\.\d+)*)", m.group("refs")):
            if ref not in numbers:
                what = f"cites {m.group('doc')} §{ref}, which has no such section"
                yield Problem(source, line_of(text, m.start()), what)
    for m in QUOTED_SECTION.finditer(text):
        doc = m.group("doc")
        path = "README.md" if doc.startswith("README") and not doc.endswith(".md") else resolve(doc, source, files)
        if path is None or path not in files:
            continue
        title = re.sub(r"\s*\n[ \t#]*", " ", m.group("title").strip())
        if title.lower() not in {h.lower() for h in heading_texts(path)}:
            what = f'cites {doc} "{title}", which is not a heading of {path}'
            yield Problem(source, line_of(text, m.start()), what)


def broken_links(text: str, source: str, files: frozenset[str]) -> Iterator[Problem]:
    """Relative Markdown links whose file, folder or ``#anchor`` does not exist."""
    text = FENCE.sub(lambda m: "\n" * m.group().count("\n"), text)
    for m in LINK.finditer(text):
        target = m.group("target")
        if URL.match(target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        path = posixpath.normpath(posixpath.join(posixpath.dirname(source), file_part)) if file_part else source
        is_folder = any(f.startswith(path.rstrip("/") + "/") for f in files)
        if path not in files and not is_folder:
            yield Problem(source, line_of(text, m.start()), f"links to {target}: no such file")
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            yield Problem(source, line_of(text, m.start()), f"links to {target}: no heading with that anchor")


def _problems(check) -> list[str]:
    files = repository_files()
    return [str(p) for source in scanned_files(files) for p in check(
        (ROOT / source).read_text(encoding="utf-8", errors="replace"), source, files)]


def test_named_documents_exist():
    problems = _problems(missing_documents)
    assert not problems, "documents named but not in the repository (cite docs/ or the paper instead):\n" + \
        "\n".join(problems)


def test_cited_sections_exist():
    problems = _problems(missing_sections)
    assert not problems, "sections cited but not found:\n" + "\n".join(problems)


def test_relative_links_resolve():
    files = repository_files()
    pages = sorted(p for p in files if p == "README.md" or (p.startswith("docs/") and p.endswith(".md")))
    assert "README.md" in pages and len(pages) > 1
    problems = [str(p) for page in pages for p in broken_links((ROOT / page).read_text(encoding="utf-8"), page, files)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_one_click_from_the_readme():
    files = repository_files()
    pages = {p for p in files if posixpath.dirname(p) == "docs" and p.endswith(".md")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {posixpath.normpath(m.group("target").partition("#")[0]) for m in LINK.finditer(readme)}
    assert pages, "docs/ holds no pages"
    assert not pages - linked, f"pages of docs/ the README does not link to: {sorted(pages - linked)}"


def test_readme_stays_a_front_door():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {README_MAX_BYTES})"


def test_the_checks_catch_what_they_are_for():
    """The checks above flag a made-up document, section and link, and pass the genuine ones.

    The made-up names are assembled at run time, so that this file itself passes the checks.
    """
    files = repository_files()
    gone, page, sect = "NOWHERE_NOTES" + ".md", "docs/nowhere_page" + ".md", "§" + "99.9"
    title = '"' + "Nowhere" + '"'
    text = (f"see {gone} §2 and docs/metrics.md §3.1, {sect}; sweeps write summary{'.md'} and out/summary{'.md'};\n"
            f'docs/design.md, "Hydra" and docs/design.md, {title}; https://example.org/{gone}\n'
            f"[a](docs/metrics.md#31-mia-efficacy) [b](docs/metrics.md#no-such-anchor) [c]({page})\n"
            f"OPTML-Group/Unlearn-Saliency Classification/README{'.md'}:34 but mu_lightning/data {gone}\n")
    assert [p.what for p in missing_documents(text, "x.py", files)] == [
        f"names {gone}, which is not in the repository", f"names {page}, which is not in the repository",
        f"names {gone}, which is not in the repository"]
    assert [p.what for p in missing_sections(text, "x.py", files)] == [
        f"cites docs/metrics.md {sect}, which has no such section",
        f"cites docs/design.md {title}, which is not a heading of docs/design.md"]
    assert [p.what for p in broken_links(text, "README.md", files)] == [
        "links to docs/metrics.md#no-such-anchor: no heading with that anchor", f"links to {page}: no such file"]
