"""The paper's tables by key: ``TABLES["table5"]`` (each defined in ``orchestration/tables/paper/``)."""

from __future__ import annotations

from orchestration.tables.paper import table2, table3, table4, table5
from orchestration.tables.spec import PaperTable

TABLES: dict[str, PaperTable] = {t.key: t for t in (table2.TABLE, table3.TABLE, table4.TABLE, table5.TABLE)}
