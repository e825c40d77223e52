"""``python -m orchestration.replay <grid folder>``: send spooled MLflow records to the store."""

import sys

from orchestration.spool import main

if __name__ == "__main__":
    sys.exit(main())
