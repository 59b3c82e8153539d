"""tether.harness.docs: README examples, their expected outputs and PostgreSQL rewrites."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from tether.harness.docs import (
    check_documented,
    conninfo,
    examples,
    on_postgresql,
    python_blocks,
    run_example,
    run_python_block,
)

README = """# x

<!-- readme-test: sqlite3 postgresql -->
```python
import sqlite3
print(sqlite3.connect(":memory:").execute("SELECT 1").fetchone())
```

It prints:

```text
(1,)
```

```python
print("no output block")
```
"""


class FakeServer:
    def url(self, database: str | None = None) -> str:
        return f"postgresql://u:p@h:5432/{database}"


def _readme(tmp_path: Path, text: str = README) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_examples_are_parsed_with_outputs_and_targets(tmp_path: Path) -> None:
    first, second = examples(_readme(tmp_path))
    assert first.output == "(1,)\n"
    assert first.targets == {"sqlite3", "postgresql"}
    assert first.id == "line4"
    assert second.output is None and second.targets == {"sqlite3"}
    assert python_blocks(_readme(tmp_path)) == [first.code, second.code]


def test_check_documented_wants_every_output(tmp_path: Path) -> None:
    found = examples(_readme(tmp_path))
    with pytest.raises(AssertionError, match="no 'It prints:' block"):
        check_documented(found)
    check_documented(found[:1], postgresql=1)
    with pytest.raises(AssertionError, match="1 examples run on PostgreSQL"):
        check_documented(found[:1], postgresql=2)


def test_run_example_returns_stdout_and_fails_loudly(tmp_path: Path) -> None:
    (example, _) = examples(_readme(tmp_path))
    assert run_example(example.code) == example.output
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        run_python_block("1 / 0")


def test_on_postgresql_rewrites_each_line_once() -> None:
    server = cast(Any, FakeServer())
    rewrites = {
        "import sqlite3\n": lambda server, database: "import psycopg\n",
        'sqlite3.connect(":memory:")': lambda server, database: (
            f"psycopg.connect({conninfo(server, database)})"
        ),
    }
    code = 'import sqlite3\nsqlite3.connect(":memory:")\n'
    assert on_postgresql(code, rewrites, server, "db") == (
        "import psycopg\npsycopg.connect('postgresql://u:p@h:5432/db')\n"
    )
    with pytest.raises(AssertionError, match="no line to rewrite"):
        on_postgresql("print(1)\n", rewrites, server, "db")
    with pytest.raises(AssertionError, match="occurs 2 times"):
        on_postgresql("import sqlite3\n" * 2, rewrites, server, "db")
    with pytest.raises(AssertionError):
        on_postgresql("import sqlite3\nsqlite3.connect('x')\n", rewrites, server, "db")
