"""``python -m orchestration.runtime.replay <grid folder>``: send spooled MLflow records to the store."""

import sys

from orchestration.runtime.spool import main

if __name__ == "__main__":
    sys.exit(main())
