"""The repository is self-contained: no text file in it names a file outside it.

Checked over the files git would commit (tracked, plus untracked ones that are not ignored), except binary
files and the committed results (``leaderboard/results/``, generated data):

- no citation of notes that live outside the repository (``shared/reference/...``, ``../shared``,
  ``DESIGN.md``): the design is ``docs/design.md``, the background notes are ``docs/reference/*.md``;
- no absolute path of one particular machine (``/work/``, ``/root/``, ``/home/``, ``/tmp/``, ...);
  ``~/.cache/pdbench``, the documented default cache, and ``/usr/bin/env`` in a shebang are fine;
- every Markdown file named in prose (any line of a non-Python text file; the comments and docstrings of a
  Python file, whose other strings are data such as a test's scratch file names) exists in the repository:
  as a path from the root, as a path relative to the naming file's folder, or as a bare file name that
  exactly one file of the repository has.

Every failure names ``file:line``.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
SKIPPED = ("leaderboard/results/",)  # generated data, checked by `pdbench validate`

OUTSIDE = [
    (re.compile(r"shared/reference"), "cites a note outside the repository; cite docs/reference/<note>.md"),
    (re.compile(r"\.\./shared\b"), "names ../shared, outside the repository"),
    (re.compile(r"\bDESIGN\.md\b"), "cites DESIGN.md, which lives outside the repository; cite docs/design.md"),
    (
        re.compile(r"(?<![\w.~/-])/(?:work|root|home|tmp|Users|mnt|scratch)/"),
        "an absolute path of one machine; use a path relative to the repository (or tmp_path in a test)",
    ),
    (re.compile(r"\b[A-Za-z]:\\Users\\"), "an absolute path of one machine"),
]

# A Markdown file name: a whole token, optionally with folders (``docs/x.md``, ``../design.md``); a name
# inside a URL or after another path part (``<board>/LEADERBOARD.md``) is not a token of its own.
MD_TOKEN = re.compile(r"(?<![\w/.@<>:-])((?:[\w.-]+/)*[\w-][\w.-]*\.md)(?![\w/])")


@cache
def repo_files() -> tuple[str, ...]:
    """Paths (relative to the root) of the files git would commit, minus the skipped folders."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the file list comes from git")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = sorted({n for n in out.split("\0") if n})
    return tuple(n for n in names if not n.startswith(SKIPPED) and (ROOT / n).is_file())


@cache
def text_lines(name: str) -> tuple[str, ...] | None:
    """The lines of a UTF-8 text file, or None for a binary one."""
    data = (ROOT / name).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return tuple(data.decode("utf-8").splitlines())
    except UnicodeDecodeError:
        return None


def text_files() -> list[str]:
    return [n for n in repo_files() if text_lines(n) is not None]


def prose_lines(name: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of the prose in a text file: every line, or for Python its comments and
    docstrings only."""
    lines = text_lines(name) or ()
    if not name.endswith(".py"):
        return list(enumerate(lines, 1))
    source = "\n".join(lines) + "\n"
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        tree = ast.parse(source)
    except (SyntaxError, tokenize.TokenError):  # not valid Python (yet): check every line
        return list(enumerate(lines, 1))
    out = [(tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT]
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                end = first.end_lineno or first.lineno
                out += [(i, lines[i - 1]) for i in range(first.lineno, end + 1)]
    return sorted(out)


def test_the_checked_files_include_code_and_docs() -> None:
    files = set(text_files())
    assert {"README.md", "pyproject.toml", "benchmark/toy.py", THIS} <= files
    assert not any(n.startswith(SKIPPED) for n in files)


def test_no_text_file_names_a_path_outside_the_repository() -> None:
    problems = []
    for name in text_files():
        if name == THIS:  # it spells out the patterns it looks for
            continue
        for i, line in enumerate(text_lines(name) or (), 1):
            for pattern, why in OUTSIDE:
                m = pattern.search(line)
                if m:
                    problems.append(f"{name}:{i}: {why}: ...{line[max(0, m.start() - 40) : m.end() + 40]}...")
    assert not problems, "files that point outside the repository:\n" + "\n".join(problems)


def _resolves(token: str, name: str, basenames: dict[str, list[str]], files: set[str]) -> str | None:
    """None when ``token`` (named in file ``name``) is a Markdown file of the repository, else why not."""
    for base in (PurePosixPath(), PurePosixPath(name).parent):
        parts: list[str] = []
        for part in (base / token).parts:
            if part == "..":
                if not parts:
                    break  # climbs above the repository root
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            if "/".join(parts) in files:
                return None
    if "/" not in token:
        owners = basenames.get(token, [])
        if len(owners) == 1:
            return None
        if len(owners) > 1:
            return f"{token} is ambiguous ({', '.join(owners)}); name it by its path"
    return f"{token} is not a file of the repository"


def test_every_markdown_file_named_exists_in_the_repository() -> None:
    files = set(repo_files())
    basenames: dict[str, list[str]] = {}
    for f in sorted(files):
        basenames.setdefault(PurePosixPath(f).name, []).append(f)
    problems = []
    for name in text_files():
        if name == THIS:  # its examples name missing files on purpose
            continue
        for i, line in prose_lines(name):
            for m in MD_TOKEN.finditer(line):
                why = _resolves(m.group(1), name, basenames, files)
                if why is not None:
                    problems.append(f"{name}:{i}: {why}")
    assert not problems, "Markdown files named but not in the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "line,bad",
    [
        ("see ``shared/reference/apd_spd.md`` 3.1", True),
        ("(DESIGN.md, Core contracts)", True),
        ("open ../shared/hooks", True),
        ("cached under /tmp/pdbench", True),
        ('path = "/home/me/x"', True),
        ("see docs/design.md and docs/reference/l3d.md", False),
        ("cached under `~/.cache/pdbench`", False),
        ("#!/usr/bin/env bash", False),
        ("https://example.org/work/home/", False),
        ("pdbench-results/tmp/x", False),
    ],
)
def test_outside_patterns_on_examples(line: str, bad: bool) -> None:
    assert any(p.search(line) for p, _ in OUTSIDE) is bad


def test_prose_of_a_python_file_is_its_comments_and_docstrings() -> None:
    lines = prose_lines(THIS)
    assert lines[0][1].startswith('"""The repository is self-contained')
    assert any("# generated data" in text for _, text in lines)
    assert not any(text.lstrip().startswith("ROOT =") for _, text in lines)


def test_markdown_resolution_on_examples() -> None:
    files = {"README.md", "docs/design.md", "docs/methods/l3d.md", "docs/reference/l3d.md", "docs/metrics.md"}
    basenames: dict[str, list[str]] = {}
    for f in sorted(files):
        basenames.setdefault(PurePosixPath(f).name, []).append(f)
    tokens = {m.group(1) for m in MD_TOKEN.finditer("a <board>/LEADERBOARD.md, https://x.org/y/README.md")}
    assert tokens == set()
    assert _resolves("docs/design.md", "benchmark/toy.py", basenames, files) is None
    assert _resolves("../design.md", "docs/reference/l3d.md", basenames, files) is None
    assert _resolves("metrics.md", "tests/test_metrics.py", basenames, files) is None
    assert _resolves("README.md", "docs/submit.md", basenames, files) is None
    assert "ambiguous" in (_resolves("l3d.md", "methods/l3d.py", basenames, files) or "")
    assert "not a file" in (_resolves("rib_lib_pca.md", "methods/lib.py", basenames, files) or "")
    assert "not a file" in (_resolves("../../../x.md", "docs/a.md", basenames, files) or "")
