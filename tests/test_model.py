"""The MGN family: shapes, map sizes, embedding layout, parameter ownership, gradients, weights."""

from dataclasses import replace

import pytest
import torch

from mgn.backbone import PretrainedWeightsMissing, build_resnet, hub_weight_files
from mgn.config import Backbone, ClassifierInput, ConfigError, Init, ModelConfig
from mgn.losses import mgn_loss
from mgn.model import MGN, MGNOutput
from mgn.recipes import smoke
from mgn.table5 import TrainedRow, trained_rows

NUM_CLASSES = 5
TABLE5_NETWORKS = [row.config(smoke()).model for row in trained_rows()]


def _tiny(model: ModelConfig) -> ModelConfig:
    return replace(model, backbone=Backbone.RESNET18 if model.backbone is not Backbone.RESNET34 else Backbone.RESNET34,
                   init=Init.RANDOM)  # fmt: skip


def _batch(n: int = 4, height: int = 64, width: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(n, 3, height, width), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3][:n])


def _expected_dim(config: ModelConfig, channels: int) -> int:
    dim = config.reduction_dim or channels
    return sum(dim * (1 + (n if n > 1 else 0)) for n in config.branches)


@pytest.mark.parametrize("config", TABLE5_NETWORKS, ids=[r.name for r in trained_rows()])
def test_every_table5_network_trains_and_embeds(config):
    config = _tiny(config)
    model = MGN(config, NUM_CLASSES)
    images, targets = _batch()
    out = model(images)
    assert isinstance(out, MGNOutput)
    num_parts = sum(n for n in config.branches if n > 1)
    assert len(out.global_logits) == len(config.branches) and len(out.part_logits) == num_parts
    assert all(logits.shape == (4, NUM_CLASSES) for logits in out.global_logits + out.part_logits)
    model.eval()
    embedding = model(images)
    assert embedding.shape == (4, _expected_dim(config, 512)) == (4, model.embedding_dim)
    assert torch.isfinite(embedding).all()


@pytest.mark.parametrize("config", TABLE5_NETWORKS, ids=[r.name for r in trained_rows()])
def test_gradient_reaches_every_parameter(config):
    """timm's check: one backward of the configured losses touches every trainable parameter."""
    model = MGN(_tiny(config), NUM_CLASSES)
    images, targets = _batch()
    loss_config = next(r for r in trained_rows() if r.config(smoke()).model == config).config(smoke()).loss
    mgn_loss(model(images), targets, loss_config).total.backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []


def test_mgn_r50_map_sizes_and_dims_at_384x128():
    model = MGN(ModelConfig(init=Init.RANDOM), 751).eval()
    with torch.no_grad():
        shared = model.trunk(torch.randn(1, 3, 384, 128))
        maps = [branch.layers(shared).shape[-2:] for branch in model.branches]
        embedding = model(torch.randn(1, 3, 384, 128))
    assert maps == [(12, 4), (24, 8), (24, 8)]  # Table 1
    assert embedding.shape == (1, 2048)  # 256 + 3*256 + 4*256
    assert [s.stop - s.start for s in model.branch_slices()] == [256, 768, 1024]
    assert model.branch_columns([1]) == list(range(256, 1024))


def test_branches_own_distinct_parameters_initialised_alike():
    model = MGN(ModelConfig(backbone=Backbone.RESNET18, init=Init.RANDOM), NUM_CLASSES)
    layers = [dict(b.layers.named_parameters()) for b in model.branches]
    for name in layers[0]:
        pointers = {layer[name].data_ptr() for layer in layers}
        assert len(pointers) == 3, f"{name} is shared between branches"
        assert all(torch.equal(layer[name], layers[0][name]) for layer in layers), (
            f"{name} initialised differently"
        )
    heads = [p.data_ptr() for b in model.branches for c in b.classifiers for p in c.parameters()]
    assert len(heads) == len(set(heads))  # no classifier shares weights (Fig. 3)
    trunk = {p.data_ptr() for p in model.trunk.parameters()}
    assert not trunk & {p.data_ptr() for b in model.branches for p in b.parameters()}


def test_global_branch_strides_and_part_branches_do_not():
    model = MGN(ModelConfig(backbone=Backbone.RESNET50, init=Init.RANDOM, branches=(1, 2)), NUM_CLASSES)
    assert model.branches[0].layers[-1][0].conv2.stride == (2, 2)
    assert model.branches[1].layers[-1][0].conv2.stride == (1, 1)
    assert model.branches[1].layers[-1][0].downsample[0].stride == (1, 1)


def test_without_triplet_moves_the_global_softmax_to_reduced_features():
    paper_like = MGN(ModelConfig(backbone=Backbone.RESNET18, init=Init.RANDOM), NUM_CLASSES)
    without_tp = MGN(
        ModelConfig(
            backbone=Backbone.RESNET18, init=Init.RANDOM, global_classifier_input=ClassifierInput.REDUCED
        ),
        NUM_CLASSES,
    )
    assert paper_like.branches[0].classifiers[0].in_features == 512  # z_g
    assert without_tp.branches[0].classifiers[0].in_features == 256  # f_g


def test_pooling_choice_changes_the_features():
    images, _ = _batch()
    torch.manual_seed(1)
    max_model = MGN(ModelConfig(backbone=Backbone.RESNET18, init=Init.RANDOM), NUM_CLASSES).eval()
    torch.manual_seed(1)
    avg_model = MGN(
        ModelConfig(backbone=Backbone.RESNET18, init=Init.RANDOM, pooling="avg"), NUM_CLASSES
    ).eval()
    with torch.no_grad():
        assert not torch.allclose(max_model(images), avg_model(images))


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing) as info:
        build_resnet(Backbone.RESNET50, Init.IMAGENET)
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path) in message and "model.init=random" in message
    with pytest.raises(PretrainedWeightsMissing, match="does not exist"):
        build_resnet(Backbone.RESNET18, Init.IMAGENET, str(tmp_path / "nope.pth"))


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = build_resnet(Backbone.RESNET18, Init.RANDOM)
    target = hub_weight_files(Backbone.RESNET18)[0]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    loaded = build_resnet(Backbone.RESNET18, Init.IMAGENET)
    assert torch.equal(loaded.conv1.weight, reference.conv1.weight)
    model = MGN(ModelConfig(backbone=Backbone.RESNET18, init=Init.IMAGENET), NUM_CLASSES)
    for branch in model.branches:  # every branch starts from the same pretrained layer4
        assert torch.equal(branch.layers[-1][1].conv1.weight, reference.layer4[1].conv1.weight)


def test_wrong_weight_file_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not hold resnet18 weights"):
        build_resnet(Backbone.RESNET18, Init.IMAGENET, str(path))


def test_table5_rows_are_the_papers_fifteen():
    from mgn.table5 import ROWS, BranchRow, EnsembleRow

    assert len(ROWS) == 15 and ROWS[-1].name == "MGN" and ROWS[0].name == "ResNet-50"
    assert sum(isinstance(r, TrainedRow) for r in ROWS) == 11
    assert (
        sum(isinstance(r, BranchRow) for r in ROWS) == 3
        and sum(isinstance(r, EnsembleRow) for r in ROWS) == 1
    )
    assert [r.name for r in trained_rows()] == [r.name for r in ROWS if isinstance(r, TrainedRow)]
    deeper = next(r for r in ROWS if r.name == "ResNet-101").config(smoke())
    assert deeper.model.backbone is Backbone.RESNET34 and deeper.loss.triplet_weight == 0


def test_the_imagenet_release_asked_for_is_the_one_used_and_recorded(tmp_path, monkeypatch):
    import hashlib

    from mgn.backbone import pretrained_identity
    from mgn.config import ImagenetWeights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    v1, v2 = hub_weight_files(Backbone.RESNET50)
    v2.parent.mkdir(parents=True)
    torch.save(build_resnet(Backbone.RESNET50, Init.RANDOM).state_dict(), v2)
    paper_model = ModelConfig(backbone=Backbone.RESNET50, init=Init.IMAGENET)  # asks for V1, the paper's era
    with pytest.raises(
        PretrainedWeightsMissing, match=rf"asks for {v1.name}, but the hub cache holds {v2.name}"
    ):
        pretrained_identity(paper_model)
    v2_model = replace(paper_model, imagenet_weights=ImagenetWeights.V2)
    assert pretrained_identity(v2_model) == {
        "pretrained_file": v2.name,
        "pretrained_sha256": hashlib.sha256(v2.read_bytes()).hexdigest(),
    }
    explicit = replace(paper_model, pretrained_path=str(v2))  # a file given explicitly is used as given
    assert pretrained_identity(explicit)["pretrained_file"] == v2.name
    assert pretrained_identity(replace(paper_model, init=Init.RANDOM)) == {}
    with pytest.raises(ConfigError, match="only IMAGENET1K_V1 for resnet18"):
        ModelConfig(backbone=Backbone.RESNET18, imagenet_weights=ImagenetWeights.V2)


def test_ide_baselines_pool_by_average_and_mgn_by_max():
    from mgn.config import Pooling
    from mgn.recipes import paper
    from mgn.table5 import ROWS_BY_NAME

    for name in ("ResNet-50", "ResNet-101"):
        assert ROWS_BY_NAME[name].config(paper()).model.pooling is Pooling.AVG
    assert ROWS_BY_NAME["MGN"].config(paper()).model.pooling is Pooling.MAX
