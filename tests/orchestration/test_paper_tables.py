"""The table specs: which networks and which data each table's rows get (no training)."""

from __future__ import annotations

from mgn.config import DatasetName
from orchestration.tables.command import parser
from orchestration.tables.planning import make_plan, networks_tag
from orchestration.tables.registry import TABLES


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


def test_every_trial_records_how_it_departs_from_the_papers_recipe_for_its_row():
    from orchestration.tables.planning import trial_tags

    plan = _plan("table5", "--profile", "paper", "--set", "model.init=random", "--set", "train.amp=true")
    tags = trial_tags(plan, "MGN w/o TP", 0)
    assert tags["deviations"] == "model.init=random (paper: imagenet); train.amp=True (paper: False)"
    assert tags["amp"] == "true" and tags["eval_precision"] == "fp32" and "pretrained_file" not in tags
    # A row's own variant is the table's content, not a deviation.
    assert "triplet" not in tags["deviations"] and "global_classifier_input" not in tags["deviations"]
    assert (
        trial_tags(_plan("table5", "--profile", "paper", "--set", "model.init=random"), "MGN", 0)[
            "deviations"
        ]
        == "model.init=random (paper: imagenet)"
    )


def test_the_plan_before_compute_counts_steps_images_and_training_flops():
    from orchestration.study.preflight import TrialShape
    from orchestration.tables.planning import describe

    plan = _plan("table5", "--profile", "paper", "--rows", "MGN", "--rows", "ResNet-50", "--seeds", "2")
    lines = describe(plan, {key: TrialShape(steps_per_epoch=202, num_classes=751) for key in plan.configs})
    mgn = next(line for line in lines if line.strip().startswith("MGN:"))
    assert "80 epochs x 202 steps = 16,160 steps of 64 images (1,034,240 images)" in mgn
    assert "71.1 GFLOP per image" in mgn  # MGN-R50 at 384x128, forward + backward
    baseline = next(line for line in lines if "ResNet-50:" in line)
    assert float(baseline.split("GFLOP")[0].split()[-1]) < 71.1 / 2  # one ResNet-50 is far cheaper
    assert lines[-1].startswith("  all 4 trials x 2 seeds: 64,640 steps")


def test_train_seed_is_the_first_seed_not_ignored():
    plan = _plan("table5", "--rows", "MGN", "--set", "train.seed=5", "--seeds", "3")
    assert plan.seeds == [5, 6, 7]
    assert [plan.configs[("MGN", s)].train.seed for s in plan.seeds] == [5, 6, 7]


def test_figure_titles_name_the_data_actually_used():

    spec = TABLES["table5"]
    assert spec.heading("synthetic") == "Table 5: ablations on Market-1501 [data: synthetic, not market1501]"
    assert spec.heading("market1501") == spec.title


def test_every_subset_of_rows_gets_a_table_file_of_its_own():
    """A long subset name is cut to stay short; two subsets sharing the cut part still get two files
    (the landed code cut both to the same 80 characters, and the second overwrote the first)."""
    from orchestration.tables.render import table_stem

    spec = TABLES["table5"]
    names = [t.name for t in spec.trials]
    first, second = names[:6], [*names[:6], names[7]]
    stems = {table_stem(spec, rows) for rows in (first, second, names[:2], names[1:3])}
    assert len(stems) == 4 and all(len(s) <= 80 and s.startswith("table5-subset-") for s in stems)
    assert table_stem(spec, names) == "table5"  # every row: the table itself
    assert table_stem(spec, names[:2]) == table_stem(spec, names[1::-1])  # the same subset, in any order


def test_a_row_computed_from_other_networks_selects_them_and_an_unknown_row_is_named():
    """Which networks a run trains is the table's one selection (``PaperTable.select``)."""
    import pytest

    table5 = TABLES["table5"]
    assert [t.name for t in table5.select(("Part-2 (Branch)",))] == ["MGN"]  # a branch of MGN
    ensemble = [t.name for t in table5.select(("G+P2+P3 (Single)",))]
    assert ensemble == ["ResNet-50+TP", "Part-2 (Single)", "Part-3 (Single)"]  # its three members
    with pytest.raises(ValueError, match="unknown Table 5 row"):
        table5.select(("MGN v2",))
