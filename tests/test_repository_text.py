"""The repository's text speaks of the product: no words of its own development history, no paths outside it.

Every tracked text file (code, docs, results, templates, tests) is read. Upstream threads are cited by their
repository, e.g. ``huggingface/peft#1601``, which these patterns do not match.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Spelled so that this file does not match itself.
HISTORY_WORDS = re.compile(
    r"\bthis\s+stop\b|\bissue\s+[0-9]+\b|\bthe\s+notes\b|\bthe\s+issue['’]s\s+goals?\b|\bdesign\s+sketch\b|\.\./shared\b",
    re.IGNORECASE,
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file but caches
        names = [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file() and not {".git", ".venv", "__pycache__", ".ci"} & set(p.relative_to(ROOT).parts)
        ]
    return [ROOT / n for n in names if not n.startswith(".ci/")]


def test_no_history_words_or_outside_paths() -> None:
    found = []
    files = tracked_files()
    assert len(files) > 50
    for path in files:
        data = path.read_bytes() if path.is_file() else b""
        if b"\0" in data[:8192]:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if HISTORY_WORDS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "say what the product does instead:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    # each example split in two literals, so this file holds none of them whole
    halves = [("as of this", " stop"), ("see Issue", " 16"), ("the design", " sketch"), ("the issue's", " goals")]
    for text in [a + b for a, b in halves] + ["../sha" + "red/x.md", "in the" + " notes"]:
        assert HISTORY_WORDS.search(text), text
    for text in ("huggingface/peft#1601", "report.weight_bounds.notes", "PEFT issues a warning", "docs/x.md"):
        assert not HISTORY_WORDS.search(text), text
