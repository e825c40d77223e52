"""The ``mgn`` command as installed: ``mgn.cli`` with MLflow model URIs resolved through the tracking
door, so that ``mgn extract models:/mgn-table5-mgn/1 ...`` reads a model a grid registered.

The library's CLI reads files only (``mgn`` imports neither MLflow nor orchestration); this module
hands it the resolver.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mgn.cli import main as library_main
from mgn.errors import UsageError


def resolve(uri: str) -> Path:
    """The weights file behind ``models:/NAME/VERSION`` or ``runs:/RUN_ID``, downloaded once into the
    cache (``$MGN_CACHE/models``), from the store at ``$MLFLOW_TRACKING_URI`` (else ./mlflow.db)."""
    # MLflow is imported only for a URI: commands given files never load it.
    from mgn.data.synthetic import cache_root
    from orchestration.runtime.tracking import Tracker, resolve_tracking_uri

    folder = cache_root() / "models" / "".join(c if c.isalnum() else "-" for c in uri)
    try:
        return Tracker(resolve_tracking_uri(None)).model_file(uri, folder)
    except Exception as error:  # no such model, version or run; an unreachable store
        raise UsageError(
            f"{uri}: {error} (the store is $MLFLOW_TRACKING_URI, else the project's mlflow.db)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    return library_main(argv, resolve_uri=resolve)


if __name__ == "__main__":
    sys.exit(main())
