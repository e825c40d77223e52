"""MGN on one data set, and the synthetic set that stands in for it without a data root."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from mgn.config import DatasetName, ExperimentConfig, SyntheticConfig


def mgn_on(
    dataset: DatasetName, stand_in: Mapping[str, float | int] | None = None, multi_query: bool = False
) -> Callable[[ExperimentConfig], ExperimentConfig]:
    """MGN on ``dataset``. Without a data root the synthetic set stands in for it, changed by
    ``stand_in`` (``SyntheticConfig`` fields) to carry the trait that sets the real one apart: 8
    cameras for DukeMTMC-reID, 2 views and detector-like misalignment for CUHK03 "detected".
    Without it Tables 2 and 3 would train the same network on the same bytes. ``multi_query``:
    also Market-1501's multiple-query protocol (Table 2)."""

    def make(base: ExperimentConfig) -> ExperimentConfig:
        config = replace(base, model=replace(base.model, branches=(1, 2, 3)))
        if multi_query:
            config = replace(config, eval=replace(config.eval, multi_query=True))
        if base.data.dataset is DatasetName.SYNTHETIC:  # any profile: what decides is the data
            default = SyntheticConfig()
            traits: dict[str, Any] = {  # a value the user set (--set data.synthetic.*) wins over the stand-in's
                name: value
                for name, value in (stand_in or {}).items()
                if getattr(config.data.synthetic, name) == getattr(default, name)
            }
            synthetic = replace(config.data.synthetic, **traits)
            return replace(config, data=replace(config.data, synthetic=synthetic))
        return replace(config, data=replace(config.data, dataset=dataset))

    return make
