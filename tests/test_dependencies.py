"""uv.lock is the one list of versions: make, CI and the Docker image install from it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

UV = Path(sys.executable).parent / "uv"  # installed into the venv by make


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    # Offline: whether the lock satisfies pyproject.toml is read from the two files.
    return subprocess.run(
        [str(UV), "lock", "--check", "--offline", "--directory", str(project)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_lock_file_agrees_with_pyproject() -> None:
    result = lock_check(ROOT)
    assert result.returncode == 0, f"run `make lock`:\n{result.stderr}"


def test_a_requirement_the_lock_does_not_satisfy_is_caught(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"orjson>=', '"orjson>=999'))
    assert lock_check(tmp_path).returncode != 0


def test_make_installs_exactly_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"\$\(UV\) sync .*--locked", makefile)
    assert "pip install -e" not in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
