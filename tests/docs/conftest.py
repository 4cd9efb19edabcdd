"""The docs' build-time generators live in docs/hooks/ (MkDocs loads them by path): make them
importable for the tests of this directory."""

from __future__ import annotations

import sys
from pathlib import Path

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks"
if str(HOOKS) not in sys.path:
    sys.path.insert(0, str(HOOKS))
