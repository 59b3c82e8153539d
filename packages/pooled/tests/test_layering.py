"""tether.pooled uses only tether.steady's declared layer API (no private name of steady).

The packages are released separately: a private name of steady used here
would break this package on a steady release that renames it.
"""

from __future__ import annotations

from pathlib import Path

import tether.pooled
from tether.steady.layering import private_uses


def test_only_steadys_declared_api_is_used() -> None:
    source = Path(tether.pooled.__file__).parent  # the installed package, as users get it
    assert private_uses(source) == []
