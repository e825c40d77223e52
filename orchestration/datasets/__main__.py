"""``python -m orchestration.datasets upload <folder> <uri>``: see ``orchestration.datasets.command``."""

import sys

from orchestration.datasets.command import main

if __name__ == "__main__":
    sys.exit(main())
