"""Runnable documentation: every ```python block of a README is executed by the tests.

A README example that no longer runs is a bug users find first. Each block
runs in a fresh interpreter (so blocks cannot lean on each other by
accident) with a temporary working directory (examples may create files).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks(readme: Path) -> list[str]:
    """The ```python blocks of ``readme``, in order."""
    return _BLOCK.findall(readme.read_text(encoding="utf-8"))


def run_python_block(code: str, *, timeout: float = 60.0) -> None:
    """Run ``code`` in a new interpreter; AssertionError with its stderr if it fails."""
    with tempfile.TemporaryDirectory(prefix="tether-readme-") as workdir:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"README example failed:\n{code}\n--- stderr ---\n{result.stderr}")
