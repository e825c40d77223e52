"""Names derived from table rows: folder and metric-key friendly slugs."""

from __future__ import annotations

import re


def slug(name: str) -> str:
    """``"MGN w/o TP"`` -> ``"mgn-w-o-tp"``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
