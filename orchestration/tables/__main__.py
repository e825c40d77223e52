"""``python -m orchestration.tables table5``: rebuild a table from the MLflow store (no training)."""

import sys

from orchestration.tables.render import main

if __name__ == "__main__":
    sys.exit(main())
