"""The table specs: which networks and which data each table's rows get (no training)."""

from __future__ import annotations

from mgn.config import DatasetName
from orchestration.experiment import parser
from orchestration.paper_tables import TABLES
from orchestration.planning import make_plan, networks_tag


def _plan(key: str, *argv: str):
    spec = TABLES[key]
    return make_plan(spec, parser(spec, f"experiments/{key}.py").parse_args(list(argv)))


def _synthetic(key: str, *argv: str) -> dict:
    plan = _plan(key, *argv)
    return {row: plan.configs[(row, 0)].data.synthetic for row in plan.rows}


def test_smoke_stand_ins_carry_the_trait_of_the_set_they_replace():
    market = _synthetic("table2")["MGN"]
    duke = _synthetic("table3")["MGN"]
    cuhk = _synthetic("table4")
    assert market.num_cameras == 6 and duke.num_cameras == 8  # Market has 6 cameras, Duke 8
    assert duke != market  # otherwise Tables 2 and 3 would train the same network on the same bytes
    labeled, detected = cuhk["MGN (labeled)"], cuhk["MGN (detected)"]
    assert labeled.num_cameras == detected.num_cameras == 2  # CUHK03: two views per person
    assert labeled.seed == detected.seed  # same people ...
    assert detected.bbox_jitter > labeled.bbox_jitter  # ... boxes from a detector are worse aligned
    assert set(_synthetic("table5").values()) == {market}  # the ablation runs on the Market stand-in


def test_user_settings_win_over_the_stand_in():
    duke = _synthetic("table3", "--set", "data.synthetic.seed=7", "--set", "data.synthetic.num_train_ids=8")[
        "MGN"
    ]
    assert duke.seed == 7 and duke.num_train_ids == 8 and duke.num_cameras == 8


def test_networks_tag_names_the_data_each_row_trained_on():
    assert networks_tag(_plan("table3")) == (
        "MGN: resnet18 branches [1, 2, 3]; all on synthetic data (8 cameras, box jitter 0.06, seed 1)"
    )
    tag = networks_tag(_plan("table4"))
    assert "MGN (labeled): resnet18 branches [1, 2, 3] on synthetic data (2 cameras, box jitter 0.03" in tag
    assert "MGN (detected): resnet18 branches [1, 2, 3] on synthetic data (2 cameras, box jitter 0.12" in tag


def test_smoke_profile_on_real_data_trains_each_row_on_its_own_set(tmp_path):
    plan = _plan("table4", "--profile", "smoke", "--data-root", str(tmp_path))
    datasets = {row: plan.configs[(row, 0)].data.dataset for row in plan.rows}
    assert datasets == {
        "MGN (labeled)": DatasetName.CUHK03_LABELED,
        "MGN (detected)": DatasetName.CUHK03_DETECTED,
    }
    assert "synthetic" not in networks_tag(plan)
