"""The Ray cluster launcher file (``deploy/aws-gpu-cluster.yaml``), checked by Ray's own cluster-config
validation (the schema ``ray up`` applies). No cloud is reachable here: nothing is launched."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCHER = Path(__file__).resolve().parents[2] / "deploy" / "aws-gpu-cluster.yaml"


def _validated(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))  # Ray's defaults for the provider, as `ray up` fills them
    validate_config(prepared)
    return prepared


def test_the_launcher_file_passes_rays_validation_and_keeps_nodes_apart():
    text = LAUNCHER.read_text()
    config = _validated(yaml.safe_load(text))
    assert config["head_node_type"] == "head" and config["available_node_types"]["head"]["resources"]["TRAIN_DRIVER"] == 8
    # Each worker node caches data sets on its own disk; credentials come from the instance profile.
    assert "MGN_CACHE=/opt/dlami/nvme/mgn-cache" in " ".join(config["worker_start_ray_commands"])
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret" not in text.lower()
    assert "experiments/reproduce_paper.py --data-root s3://" in text  # the submission it is for


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c["available_node_types"]["gpu"].update(min_workerz=1), ValidationError),
        (lambda c: c.update(head_node_type="missing"), ValueError),
    ],
)
def test_the_validation_catches_a_broken_launcher_file(change, error):
    """The check can fail: a misspelt field and a head type that does not exist are refused."""
    config = yaml.safe_load(LAUNCHER.read_text())
    change(config)
    with pytest.raises(error):
        _validated(config)
