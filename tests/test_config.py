from dataclasses import replace

import pytest

from mgn.config import (
    Backbone,
    ClassifierInput,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LRScaling,
    ModelConfig,
    OptimizerConfig,
    ScalingConfig,
)
from mgn.config_io import apply_overrides, dump_yaml, flatten, to_dict
from mgn.recipes import community, load_yaml, paper, recipe, smoke


@pytest.mark.parametrize("make", [paper, community, smoke])
def test_yaml_round_trip(make, tmp_path):
    config = make()
    path = tmp_path / "config.yaml"
    dump_yaml(config, path)
    assert load_yaml(path) == config


def test_paper_recipe_matches_section_4_1():
    config = paper()
    assert (config.data.height, config.data.width, config.data.p, config.data.k) == (384, 128, 16, 4)
    assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.weight_decay) == (
        0.01,
        0.9,
        5e-4,
    )
    assert config.optimizer.milestones == (40, 60) and config.train.epochs == 80
    assert config.loss.triplet_margin == 1.2 and config.data.random_erasing == 0
    assert config.model.branches == (1, 2, 3) and config.model.backbone is Backbone.RESNET50


def test_community_recipe():
    config = community()
    assert config.model.global_classifier_input is ClassifierInput.REDUCED
    assert (config.loss.softmax_weight, config.loss.triplet_weight) == (1.0, 2.0)
    assert (
        config.optimizer.amsgrad and config.optimizer.lr == 2e-4 and config.optimizer.milestones == (320, 380)
    )
    assert config.train.epochs == 400 and config.data.random_erasing == 0.5


def test_community_recipe_is_the_public_ports_point_by_point():
    """seathiefwang/MGN-pytorch's best run (demo.sh, option.py, data/)."""
    from mgn.config import Epoch, OptimizerKind, Pooling, Reduction

    port = {
        "pooling": Pooling.AVG, "reduction_dim": 256, "global_classifier_input": ClassifierInput.REDUCED,
        "normalize test features": True, "epoch": Epoch.IDENTITIES, "optimizer": OptimizerKind.ADAM,
        "amsgrad": True, "lr": 2e-4, "weight_decay": 5e-4, "milestones": (320, 380), "gamma": 0.1,
        "epochs": 400, "softmax_weight": 1.0, "triplet_weight": 2.0, "reductions": (Reduction.MEAN, Reduction.MEAN),
        "margin": 1.2, "random_erasing": 0.5, "p": 16, "k": 4, "size": (384, 128), "flip": True, "amp": False,
    }  # fmt: skip
    c = community()
    ours = {
        "pooling": c.model.pooling, "reduction_dim": c.model.reduction_dim,
        "global_classifier_input": c.model.global_classifier_input, "normalize test features": c.eval.normalize,
        "epoch": c.data.epoch, "optimizer": c.optimizer.kind, "amsgrad": c.optimizer.amsgrad, "lr": c.optimizer.lr,
        "weight_decay": c.optimizer.weight_decay, "milestones": c.optimizer.milestones, "gamma": c.optimizer.gamma,
        "epochs": c.train.epochs, "softmax_weight": c.loss.softmax_weight, "triplet_weight": c.loss.triplet_weight,
        "reductions": (c.loss.softmax_reduction, c.loss.triplet_reduction), "margin": c.loss.triplet_margin,
        "random_erasing": c.data.random_erasing, "p": c.data.p, "k": c.data.k, "size": (c.data.height, c.data.width),
        "flip": c.data.random_flip, "amp": c.train.amp,
    }  # fmt: skip
    assert ours == port


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        paper().train.epochs = 3  # type: ignore[misc]


def test_overrides_build_a_new_validated_config():
    config = apply_overrides(paper(), ["train.epochs=5", "model.branches=[1, 2]", "model.backbone=resnet18"])
    assert (
        config.train.epochs == 5
        and config.model.branches == (1, 2)
        and config.model.backbone is Backbone.RESNET18
    )
    assert paper().train.epochs == 80


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochz=5", "unknown config key train.epochz"),
        ("nonsense.key=1", "unknown config key nonsense"),
        ("train.epochs=five", "train.epochs: expected an integer"),
        ("train.epochs=-1", "train.epochs=-1: must be >= 1"),
        ("model.backbone=vgg16", "model.backbone: 'vgg16' is not one of"),
        ("model.branches=[]", "model.branches is empty"),
        ("model.branches=[1, 30]", "Part-30 branch"),
        ("data.p=1", "at least 2 identities"),
        ("data.random_flip=maybe", "expected true or false"),
        ("train.epochs", "expected key=value"),
        # Sizes that passed the positive checks and failed after compute or ran minutes silently.
        ("data.height=100000", "larger than 2048 pixels a side"),
        ("data.eval_batch_size=1000000000", r"data.eval_batch_size=1,000,000,000: one batch of 384x128 images is "),
        ("data.p=100000", r"data.p x data.k=400,000: .* GiB of input"),
        ("data.synthetic.num_train_ids=100000000", "stand-in for smoke runs"),
        ("eval.max_rank=1000000000", "longer than any gallery"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(paper(), [override])


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key train\.lr; valid keys here: train\.epochs"):
        load_yaml(path)


def test_part_count_must_fit_the_feature_map():
    with pytest.raises(ConfigError, match="Part-4 branch, but a 48-pixel-high input gives a 3-row"):
        ExperimentConfig(model=ModelConfig(branches=(1, 4)), data=DataConfig(height=48, width=32))
    ExperimentConfig(model=ModelConfig(branches=(1, 4)), data=DataConfig(height=64, width=32))


def test_triplet_needs_two_images_per_identity():
    with pytest.raises(ConfigError, match="K >= 2"):
        replace(paper(), data=replace(paper().data, k=1))


def test_reduced_classifier_needs_a_reduction():
    with pytest.raises(ConfigError, match="needs a reduction layer"):
        ModelConfig(reduction_dim=None, global_classifier_input=ClassifierInput.REDUCED)


def test_the_global_batch_and_learning_rate_do_not_change_with_the_workers():
    one, four = paper(), replace(paper(), scaling=ScalingConfig(num_workers=4))
    assert one.global_batch_size == four.global_batch_size == 64  # P=16 x K=4, shared by the workers
    assert four.worker_batch_size == 16 and one.worker_batch_size == 64
    linear = replace(four, optimizer=replace(four.optimizer, lr_scaling=LRScaling.LINEAR))
    assert four.effective_lr == linear.effective_lr == 0.01  # the batch the lr was given for
    bigger = replace(linear, data=replace(linear.data, p=32))  # a user who changes P x K
    assert bigger.global_batch_size == 128 and bigger.effective_lr == pytest.approx(0.02)


def test_p_must_split_into_whole_identities_per_worker():
    with pytest.raises(ConfigError, match=r"data.p=16 .* over 3 workers.*multiple of 3 .*\(e.g. data.p=24\)"):
        replace(paper(), scaling=ScalingConfig(num_workers=3))


def test_flatten_gives_dotted_string_params():
    flat = flatten(paper())
    assert flat["model.branches"] == "[1, 2, 3]" and flat["optimizer.lr"] == "0.01"
    assert flat["data.synthetic.seed"] == "0"
    assert set(flat) == {k for k in flat}  # all keys are strings
    assert to_dict(paper())["model"]["backbone"] == "resnet50"


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        recipe("fast")


def test_optimizer_milestones_must_increase():
    with pytest.raises(ConfigError, match="milestones"):
        OptimizerConfig(milestones=(60, 40))


def test_the_paper_recipe_is_fp32_and_deviations_are_named():
    from mgn.recipes import deviations

    assert paper().train.amp is False and paper().eval.precision.value == "fp32"  # as the paper trained
    assert deviations(paper(), paper()) == []
    amp = replace(paper(), train=replace(paper().train, amp=True))
    assert deviations(amp, paper()) == ["train.amp=True (paper: False)"]
    where = replace(
        paper(),
        data=replace(paper().data, root="/data", loader_workers=8),
        scaling=ScalingConfig(num_workers=2),
    )
    assert deviations(where, paper()) == []  # where and how fast a run goes is not the experiment
    assert "model.backbone=resnet18 (paper: resnet50)" in deviations(smoke(), paper())


@pytest.mark.parametrize(
    ("override", "expected"),
    [("optimizer.lr=1e-4", 1e-4), ("optimizer.lr=2.5E-3", 2.5e-3), ("optimizer.lr=.01", 0.01)],
)
def test_numbers_in_scientific_notation_are_numbers(override, expected):
    """YAML 1.1 reads 1e-4 (no dot) as a string; people and YAML 1.2 read a number."""
    assert apply_overrides(paper(), [override]).optimizer.lr == expected


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match="is not a finite number"):
        apply_overrides(paper(), [f"optimizer.lr={value}"])


def _config_file(tmp_path, content: str | bytes):
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_a_key_given_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'epochs' is given twice \(line 3\)"):
        load_yaml(_config_file(tmp_path, "train:\n  epochs: 3\n  epochs: 5\n"))


def test_a_partial_file_is_a_variant_of_the_profile_it_names(tmp_path):
    config = load_yaml(_config_file(tmp_path, "profile: smoke\ntrain:\n  epochs: 3\n"))
    assert config.train.epochs == 3 and config == replace(smoke(), train=replace(smoke().train, epochs=3))
    assert load_yaml(_config_file(tmp_path, "train:\n  epochs: 3\n")).model.backbone is paper().model.backbone
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        load_yaml(_config_file(tmp_path, "profile: tiny\n"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("train:\n  1: 3\n", "keys must be field names, got 1"),
        (b"train:\n  epochs: \xff\xfe\n", "is not UTF-8 text"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["integer key", "not UTF-8", "deep nesting"],
)
def test_malformed_config_files_are_one_clear_error(tmp_path, content, expected):
    with pytest.raises(ConfigError, match=expected):
        load_yaml(_config_file(tmp_path, content))


def test_a_retired_key_names_its_replacement(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("profile: smoke\nmodel:\n  sync_bn: true\n")
    with pytest.raises(
        ConfigError, match=r"model.sync_bn was replaced by model.bn_group.*sync_bn: true is bn_group: null"
    ):
        load_yaml(path)


def test_bn_groups_are_refused_when_they_cannot_be_formed():
    base = smoke()
    assert (base.bn_groups.ghosts, base.bn_groups.ranks) == (2, 1)  # one process: two ghost batches of 32
    with pytest.raises(
        ConfigError, match=r"bn_group=24: .*whole identities .*divide the global batch P x K = 64"
    ):
        replace(base, model=replace(base.model, bn_group=24))
    with pytest.raises(ConfigError, match=r"bn_group=16 with 2 workers of 24 images .*change --workers"):
        replace(base, data=replace(base.data, p=12), model=replace(base.model, bn_group=16),
                scaling=replace(base.scaling, num_workers=2))  # fmt: skip
    four = replace(base, scaling=replace(base.scaling, num_workers=4))
    assert (four.bn_groups.per_rank, four.bn_groups.ranks) == (16, 2)  # pairs of workers share a group
    with pytest.raises(ConfigError, match="groups of at least 2 images"):
        replace(base, model=replace(base.model, bn_group=1))


def test_a_refused_worker_count_advises_a_p_that_then_works():
    """--workers 3 with P=16 advised data.p=15, which its batch-norm groups of 32 then refused."""
    with pytest.raises(ConfigError, match=r"multiple of 3 that also forms model.bn_group=32 groups \(e.g. data.p=24\)"):
        apply_overrides(smoke(), ["scaling.num_workers=3"])
    assert apply_overrides(smoke(), ["scaling.num_workers=3", "data.p=24"]).bn_groups.ranks == 1
    with pytest.raises(ConfigError, match=r"\(e.g. data.p=15\)"):  # whole-batch BN: any multiple of 3
        apply_overrides(smoke(), ["scaling.num_workers=3", "model.bn_group=null"])
