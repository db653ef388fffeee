"""Where the shared public data lives (``../shared/data`` beside the repo, or BURNWATCH_SHARED_DATA).

A developer without it gets a skip; CI (``CI=true``) always has it beside the clone, so there the
tests run and a missing file fails them instead of skipping silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("BURNWATCH_SHARED_DATA") or REPO.parent / "shared" / "data")


def needs_shared(*paths: Path) -> pytest.MarkDecorator:
    """Skip when the shared files are missing, except in CI, where the test runs (and fails)."""
    missing = [p for p in paths if not p.exists()]
    return pytest.mark.skipif(
        bool(missing) and not os.environ.get("CI"),
        reason=f"shared data not present: {', '.join(str(p) for p in missing)}",
    )
