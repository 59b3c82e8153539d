"""Every python example in this package's README runs as written."""

from pathlib import Path

import pytest

from tether.harness.docs import python_blocks, run_python_block

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.parametrize("code", python_blocks(README))
def test_readme_example_runs(code: str) -> None:
    run_python_block(code)
