"""The 15 rows of Table 5 (ablations on Market-1501, §4.4), in the paper's order: the one list.

Each row is one of three kinds:

* ``TrainedRow``: a network trained on its own, derived from a base recipe by ``variant``.
* ``BranchRow``: one branch of a trained multi-branch network, evaluated alone (no training).
* ``EnsembleRow``: the concatenated features of several trained rows.

Rows name networks by the paper's ResNet-50/101; ``deeper`` maps the base recipe's backbone to
the deeper one of its family, so that the smoke profile's ResNet-18 gets a ResNet-34 baseline.
Each row carries the paper's numbers (R1, R5, R10, mAP on Market-1501, in percent): a new row is
one entry of ``ROWS`` (``orchestration/tables/paper/table5.py`` lays the table out from it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mgn.config import Backbone, ClassifierInput, ExperimentConfig, Pooling

DEEPER = {
    Backbone.RESNET18: Backbone.RESNET34,
    Backbone.RESNET34: Backbone.RESNET50,
    Backbone.RESNET50: Backbone.RESNET101,
    Backbone.RESNET101: Backbone.RESNET101,
}


Paper = tuple[float, float, float, float]  # R1, R5, R10, mAP as printed in Table 5


@dataclass(frozen=True)
class TrainedRow:
    name: str
    variant: Callable[[ExperimentConfig], ExperimentConfig]
    paper: Paper
    note: str = ""

    def config(self, base: ExperimentConfig) -> ExperimentConfig:
        return self.variant(base)


@dataclass(frozen=True)
class BranchRow:
    name: str
    of: str  # a TrainedRow
    branch: int  # the part count of the branch (1 = Global)
    paper: Paper
    note: str = ""


@dataclass(frozen=True)
class EnsembleRow:
    name: str
    members: tuple[str, ...]  # TrainedRows whose features are concatenated
    paper: Paper
    note: str = ""


Ablation = TrainedRow | BranchRow | EnsembleRow  # one entry of ROWS


def _branches(parts: tuple[int, ...]) -> Callable[[ExperimentConfig], ExperimentConfig]:
    def variant(base: ExperimentConfig) -> ExperimentConfig:
        return replace(base, model=replace(base.model, branches=parts))

    return variant


def _baseline(deeper: bool) -> Callable[[ExperimentConfig], ExperimentConfig]:
    """Plain ResNet (IDE, Zheng et al.): one average-pooled 2048-d feature (the IDE baseline's pooling,
    not MGN's max) and a classifier, softmax only."""

    def variant(base: ExperimentConfig) -> ExperimentConfig:
        backbone = DEEPER[base.model.backbone] if deeper else base.model.backbone
        model = replace(base.model, backbone=backbone, branches=(1,), reduction_dim=None, pooling=Pooling.AVG,
                        global_classifier_input=ClassifierInput.POOLED)  # fmt: skip
        return replace(base, model=model, loss=replace(base.loss, triplet_weight=0.0))

    return variant


def _without_triplet(base: ExperimentConfig) -> ExperimentConfig:
    """ "MGN w/o TP": no triplet; softmax on the reduced 256-d globals instead (Table 5 note)."""
    model = replace(base.model, global_classifier_input=ClassifierInput.REDUCED)
    return replace(base, model=model, loss=replace(base.loss, triplet_weight=0.0))


ROWS: tuple[Ablation, ...] = (
    TrainedRow("ResNet-50", _baseline(deeper=False), (87.5, 94.9, 96.7, 71.4),
               "IDE baseline: average-pooled feature, softmax only"),
    TrainedRow("ResNet-101", _baseline(deeper=True), (90.4, 95.7, 97.2, 78.0),
               "the deeper backbone of the same family"),
    TrainedRow("ResNet-50+TP", _branches((1,)), (88.7, 96.0, 97.2, 75.0), "= Global (Single), as the paper notes"),
    BranchRow("Global (Branch)", of="MGN", branch=1, paper=(89.8, 95.8, 97.5, 78.5)),
    TrainedRow("Part-2 (Single)", _branches((2,)), (92.6, 97.1, 98.0, 80.2)),
    BranchRow("Part-2 (Branch)", of="MGN", branch=2, paper=(94.4, 97.9, 98.8, 83.9)),
    TrainedRow("Part-3 (Single)", _branches((3,)), (93.1, 97.6, 98.7, 82.1)),
    BranchRow("Part-3 (Branch)", of="MGN", branch=3, paper=(94.4, 98.2, 98.8, 84.1)),
    EnsembleRow(
        "G+P2+P3 (Single)",
        members=("ResNet-50+TP", "Part-2 (Single)", "Part-3 (Single)"),
        paper=(94.4, 97.6, 98.5, 85.2),
        note="three independent networks, as the §4.4 text says (the Table 5 caption names Part-3 (Branch))",
    ),
    TrainedRow("MGN w/o Part-3", _branches((1, 2)), (94.4, 97.9, 98.7, 85.7)),
    TrainedRow("MGN w/ Part-4", _branches((1, 2, 3, 4)), (95.1, 98.3, 98.9, 86.1)),
    TrainedRow("MGN (Part2+4)", _branches((1, 2, 4)), (94.8, 98.2, 98.9, 85.6)),
    TrainedRow("MGN (Part3+4)", _branches((1, 3, 4)), (95.0, 98.1, 98.8, 86.1)),
    TrainedRow("MGN w/o TP", _without_triplet, (95.3, 97.9, 98.7, 86.2)),
    TrainedRow("MGN", _branches((1, 2, 3)), (95.7, 98.3, 99.0, 86.9)),
)  # fmt: skip

ROWS_BY_NAME: dict[str, Ablation] = {row.name: row for row in ROWS}


def trained_rows() -> list[TrainedRow]:
    """The rows that train a network of their own, in the paper's order (which rows a run needs is
    ``PaperTable.select``'s: branch and ensemble rows pull in the networks they are computed from)."""
    return [r for r in ROWS if isinstance(r, TrainedRow)]
