"""The repository speaks to users: a short README, and no development diary in any file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_stays_short():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


def test_no_file_tells_the_history_session_by_session():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    diary = re.compile(r"session [0-9]+", re.IGNORECASE)
    texts = [p for p in tracked.split() if p.endswith((".py", ".md", ".txt", ".toml", ".cpp", ".csv"))]
    assert texts
    found = [p for p in texts if (ROOT / p).is_file() and diary.search((ROOT / p).read_text(errors="replace"))]
    assert found == []
