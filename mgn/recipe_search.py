"""The recipe search's typed space: which training choices it may change, and how a choice becomes a recipe.

A ``SearchSpace`` lists, per knob, a range or a set of choices: learning rate and weight decay
(log-uniform), optimizer (SGD/Adam), warm-up epochs, epochs and learning-rate milestones (as
fractions of the epochs), the triplet loss weight, random erasing and pooling. A ``Candidate`` is
one point of it; ``apply`` turns a candidate into a full ``ExperimentConfig`` from a base recipe,
and ``baseline`` is the base recipe's own point, which the search evaluates first, so that the
winner is measured against it on the same validation split.

A ``SearchConfig`` is the whole study: base recipe, space, validation identities, trials, the
early-stopping schedule and the seeds of the final test evaluation. One function per named study
(``smoke_search``, ``paper_search``); variants with ``dataclasses.replace``. The driver is
``orchestration.recipe_search.run`` (Ray Tune: Optuna's TPE and ASHA); nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mgn.config import ConfigError, ExperimentConfig, OptimizerKind, Pooling, Profile
from mgn.recipes import paper, smoke


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True, slots=True)
class Range:
    """A continuous range; ``log``: sampled uniformly in log space (rates)."""

    low: float
    high: float
    log: bool = False

    def check(self, name: str) -> None:
        _require(self.low <= self.high, f"search.space.{name}: low {self.low} > high {self.high}")
        _require(not self.log or self.low > 0, f"search.space.{name}: a log range needs low > 0")

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


Milestones = tuple[float, ...]  # learning-rate drops, as fractions of the epochs: (0.5, 0.75) = paper


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchSpace:
    """The knobs and their ranges; the defaults are ``smoke_search``'s, around ``smoke()``."""

    lr: Range = Range(low=1e-4, high=1e-2, log=True)
    weight_decay: Range = Range(low=1e-5, high=5e-3, log=True)
    optimizer: tuple[OptimizerKind, ...] = (OptimizerKind.SGD, OptimizerKind.ADAM)
    warmup_epochs: tuple[int, ...] = (0, 1, 3)
    epochs: tuple[int, ...] = (8, 12)
    milestones: tuple[Milestones, ...] = ((0.5, 0.75), (0.875,))
    triplet_weight: Range = Range(low=0.0, high=2.0)
    random_erasing: Range = Range(low=0.0, high=0.5)
    pooling: tuple[Pooling, ...] = (Pooling.MAX, Pooling.AVG)

    def __post_init__(self) -> None:
        for knob in KNOBS:
            values = getattr(self, knob.name)
            if isinstance(values, Range):
                values.check(knob.name)
            else:
                _require(len(values) > 0, f"search.space.{knob.name}: give at least one choice")
        _require(self.random_erasing.high <= 1, "search.space.random_erasing: a probability, high <= 1")
        _require(
            all(0 < f < 1 for ms in self.milestones for f in ms),
            f"search.space.milestones={[list(m) for m in self.milestones]}: fractions of the epochs, in (0, 1)",
        )
        _require(all(e >= 1 for e in self.epochs), "search.space.epochs: every choice must be >= 1")
        _require(
            all(w < min(self.epochs) for w in self.warmup_epochs),
            f"search.space.warmup_epochs={list(self.warmup_epochs)}: every warm-up must be shorter than the "
            f"fewest epochs ({min(self.epochs)})",
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """One point of a ``SearchSpace``: the values a trial trains with."""

    lr: float
    weight_decay: float
    optimizer: OptimizerKind
    warmup_epochs: int
    epochs: int
    milestones: Milestones
    triplet_weight: float
    random_erasing: float
    pooling: Pooling

    def outside(self, space: SearchSpace) -> list[str]:
        """The knobs whose value ``space`` cannot produce (empty: the candidate is in it)."""
        return [k.name for k in FIELD_ORDER if getattr(self, k.name) not in getattr(space, k.name)]


def milestone_epochs(fractions: Milestones, epochs: int) -> tuple[int, ...]:
    """``(0.5, 0.75)`` of 80 epochs -> ``(40, 60)``; drops that round together or to 0 merge."""
    return tuple(sorted({max(1, round(f * epochs)) for f in fractions}))


@dataclass(frozen=True)
class Knob:
    """One training choice the search may change, declared once: how it is read from a recipe
    (``read``, the base recipe's point), written into one (``write``, which also sees the whole
    candidate: milestones are fractions of its epochs), carried as a plain value through Tune and
    Optuna (``encode``/``decode``) and shown in reports (``show``). A ``SearchSpace`` field and a
    ``Candidate`` field of the same name hold its range or choices and its value."""

    name: str
    read: Callable[[ExperimentConfig], Any]
    write: Callable[[ExperimentConfig, Any, Candidate], ExperimentConfig]
    show: Callable[[Any], str]
    encode: Callable[[Any], Any] = lambda value: value
    decode: Callable[[Any], Any] = lambda value: value


def _label(milestones: Milestones) -> str:
    return ",".join(f"{f:g}" for f in milestones)


def _unlabel(label: str) -> Milestones:
    return tuple(float(f) for f in label.split(","))


def _optimizer(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    return replace(config, optimizer=replace(config.optimizer, **changes))


# In the order ``describe`` shows them: "adam lr 1.0e-03 wd 5.0e-04 warm-up 3, 8 epochs drop at 0.875, ...".
KNOBS: tuple[Knob, ...] = (
    Knob("optimizer", lambda c: c.optimizer.kind, lambda c, v, _: _optimizer(c, kind=v), lambda v: v.value,
         encode=lambda v: v.value, decode=OptimizerKind),
    Knob("lr", lambda c: c.optimizer.lr, lambda c, v, _: _optimizer(c, lr=v), lambda v: f"lr {v:.1e}", decode=float),
    Knob("weight_decay", lambda c: c.optimizer.weight_decay, lambda c, v, _: _optimizer(c, weight_decay=v),
         lambda v: f"wd {v:.1e}", decode=float),
    Knob("warmup_epochs", lambda c: c.optimizer.warmup_epochs, lambda c, v, _: _optimizer(c, warmup_epochs=v),
         lambda v: f"warm-up {v},", decode=int),
    Knob("epochs", lambda c: c.train.epochs, lambda c, v, _: replace(c, train=replace(c.train, epochs=v)),
         lambda v: f"{v} epochs", decode=int),
    # Milestones are searched as fractions of the epochs (a schedule that scales with the length).
    Knob("milestones", lambda c: tuple(m / c.train.epochs for m in c.optimizer.milestones),
         lambda c, v, cand: _optimizer(c, milestones=milestone_epochs(v, cand.epochs)),
         lambda v: f"drop at {_label(v)},", encode=_label, decode=_unlabel),
    Knob("triplet_weight", lambda c: c.loss.triplet_weight,
         lambda c, v, _: replace(c, loss=replace(c.loss, triplet_weight=v)), lambda v: f"triplet {v:.2f},",
         decode=float),
    Knob("random_erasing", lambda c: c.data.random_erasing,
         lambda c, v, _: replace(c, data=replace(c.data, random_erasing=v)), lambda v: f"erasing {v:.2f},",
         decode=float),
    Knob("pooling", lambda c: c.model.pooling, lambda c, v, _: replace(c, model=replace(c.model, pooling=v)),
         lambda v: v.value, encode=lambda v: v.value, decode=Pooling),
)  # fmt: skip
FIELD_ORDER = tuple(sorted(KNOBS, key=lambda k: [f.name for f in fields(Candidate)].index(k.name)))


def apply(base: ExperimentConfig, candidate: Candidate) -> ExperimentConfig:
    """``base`` trained with ``candidate``'s choices (everything else, the network included, as in ``base``)."""
    config = base
    for knob in KNOBS:
        config = knob.write(config, getattr(candidate, knob.name), candidate)
    return config


def baseline(base: ExperimentConfig) -> Candidate:
    """The base recipe as a candidate: ``apply(base, baseline(base))`` trains exactly ``base``."""
    return Candidate(**{knob.name: knob.read(base) for knob in KNOBS})


def describe(candidate: Candidate) -> str:
    """``adam lr 1.0e-03 wd 5.0e-04 warm-up 3, 8 epochs drop at 0.875, triplet 1.00, erasing 0.00, max``."""
    return " ".join(knob.show(getattr(candidate, knob.name)) for knob in KNOBS)


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchConfig:
    """A recipe search: where it starts, what it may change, how it judges and what it spends."""

    base: ExperimentConfig  # the recipe searched around, and the one the winner is compared with
    space: SearchSpace = field(default_factory=SearchSpace)
    # Training identities held out as the validation protocol (mgn.data.validation); the search
    # never reads the test set: only the final evaluation of the winner and the base does.
    validation_ids: int = 16
    trials: int = 16  # the base recipe is the first of them
    # ASHA (successive halving): a trial is first judged after grace_epochs, then at grace * rf^i.
    grace_epochs: int = 4
    reduction_factor: int = 2
    final_seeds: int = 3  # the winner and the base, trained on all training ids, evaluated on the test set
    searcher_seed: int = 0  # TPE's random state: the same study proposes the same candidates
    # Trials drawn at random (the base recipe among them) before TPE models the results; Optuna's
    # default of 10 would leave a 12-trial study almost no model-based proposals.
    startup_trials: int = 5

    def __post_init__(self) -> None:
        _require(
            self.validation_ids >= 2, f"search.validation_ids={self.validation_ids}: hold out at least 2"
        )
        _require(self.trials >= 2, f"search.trials={self.trials}: the base recipe and at least one candidate")
        _require(self.grace_epochs >= 1, f"search.grace_epochs={self.grace_epochs}: must be >= 1")
        _require(self.reduction_factor >= 2, f"search.reduction_factor={self.reduction_factor}: must be >= 2")
        _require(self.final_seeds >= 1, f"search.final_seeds={self.final_seeds}: must be >= 1")
        _require(
            1 <= self.startup_trials <= self.trials,
            f"search.startup_trials={self.startup_trials}: between 1 and search.trials={self.trials}",
        )
        _require(
            self.base.data.validation_ids == 0,
            "search.base.data.validation_ids must be 0: the search sets the validation split itself "
            "(search.validation_ids)",
        )
        outside = baseline(self.base).outside(self.space)
        _require(
            not outside,
            f"search.space cannot produce the base recipe ({', '.join(outside)}): widen those knobs, so that "
            f"the search measures the base recipe on the same validation split as its candidates",
        )

    def validating(self, config: ExperimentConfig) -> ExperimentConfig:
        """``config`` trained on the training ids left, evaluated on the held-out ones after every
        epoch (the points early stopping judges: the plain ranking on a few hundred images)."""
        return replace(
            config,
            data=replace(config.data, validation_ids=self.validation_ids),
            eval=replace(config.eval, interval=1, untrained=False),
        )


def smoke_search() -> SearchConfig:
    """Around ``smoke()`` on the embedded synthetic set: 16 trials of 8 or 12 epochs on 16 held-out of
    64 training ids (ASHA ends about half of them after 4 epochs), then 3 seeds each of the winner and
    ``smoke()``: about 12 minutes on a 2-core laptop (measured: 11:54, docs/search.md)."""
    return SearchConfig(base=smoke())


def paper_search() -> SearchConfig:
    """Around the paper's recipe on Market-1501: 100 of its 751 training ids held out, 40 trials of
    at most 120 epochs (GPUs; the first judgement after 20 epochs)."""
    space = SearchSpace(
        lr=Range(low=1e-4, high=5e-2, log=True),
        epochs=(80, 120),
        warmup_epochs=(0, 5, 10),
        milestones=((0.5, 0.75), (0.625, 0.875), (0.75,)),
    )
    return SearchConfig(
        base=paper(), space=space, validation_ids=100, trials=40, grace_epochs=20, final_seeds=3
    )


SEARCHES: dict[Profile, Callable[[], SearchConfig]] = {
    Profile.SMOKE: smoke_search,
    Profile.PAPER: paper_search,
}
