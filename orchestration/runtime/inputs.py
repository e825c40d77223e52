"""What a trial trained and was tested on, as MLflow dataset inputs (the runs table's Dataset column).

Each record names the data set and split group, fingerprints it (``ReidDataset.digest``) and counts
it; the images themselves are not logged. Records are plain dicts so that they can be spooled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mgn.config import DataConfig
from mgn.data.records import ReidDataset

TRAINING, EVALUATION = "training", "evaluation"  # MLflow's context tag values


def _profile(dataset: ReidDataset, splits: list[str]) -> str:
    named = dataset.splits()
    counts = {
        split: {
            "images": len(named[split]),
            "identities": len({r.pid for r in named[split] if r.pid > 0 or split == "train"}),
            "cameras": len({r.camid for r in named[split]}),
        }
        for split in splits
    }
    return json.dumps(counts)


def dataset_records(
    dataset: ReidDataset, data: DataConfig, manifest: str | None = None
) -> list[dict[str, Any]]:
    """Two inputs: the train split (context ``training``) and the test protocol's query and gallery
    (and multiple query) together (context ``evaluation``). A data set from object storage is named
    by its manifest: both inputs' digest is the manifest's hash, and the source says which."""
    where = {"root": data.root or "embedded (synthetic cache)"} | ({"manifest": manifest} if manifest else {})
    source = json.dumps({"dataset": data.dataset.value, **where})
    test = [s for s in dataset.splits() if s != "train"]
    test_digest = hashlib.sha256("".join(dataset.digest(s) for s in test).encode()).hexdigest()
    train_digest = dataset.digest("train")
    return [
        {"name": f"{dataset.name} train", "digest": (manifest or train_digest)[:12], "source": source,
         "profile": _profile(dataset, ["train"]), "context": TRAINING},
        {"name": f"{dataset.name} test", "digest": (manifest or test_digest)[:12], "source": source,
         "profile": _profile(dataset, test), "context": EVALUATION},
    ]  # fmt: skip
