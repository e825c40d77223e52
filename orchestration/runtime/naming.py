"""Names derived from table rows: folder and metric-key friendly slugs."""

from __future__ import annotations

import re


def slug(name: str) -> str:
    """``"MGN w/o TP"`` -> ``"mgn-w-o-tp"``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def registered_name(table: str, row: str) -> str:
    """The model registry name of a table row: ``("table5", "MGN w/o TP")`` -> ``"mgn-table5-mgn-w-o-tp"``."""
    return f"mgn-{slug(table)}-{slug(row)}"
