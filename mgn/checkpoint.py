"""Training checkpoints: written atomically, read with ``weights_only=True``, bad files named.

A checkpoint holds only tensors and plain Python values (state dicts, the epoch, the config as a
dict), so it loads without unpickling arbitrary objects.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mgn.config import ExperimentConfig
    from mgn.model import MGN

CHECKPOINT_FILE = "checkpoint.pt"
LOW_SPACE = 16 * 2**20  # bytes: a failed write with less free than this was a full disk


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file cannot be read; the message names it."""


@dataclass(frozen=True)
class TrainingState:
    """What a run needs to continue: weights, optimiser and schedule, and the epochs done."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epochs_done: int
    config: dict[str, Any]  # the ExperimentConfig as a dict: the architecture
    num_classes: int = 0  # training identities (the classifiers' width); 0 when unknown


def save_checkpoint(state: TrainingState, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file renamed into place)."""
    payload = {
        "model": state.model,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "epochs_done": state.epochs_done,
        "config": state.config,
        "num_classes": state.num_classes,
    }
    return _save_atomically(payload, Path(path), "checkpoint")


def _save_atomically(payload: dict[str, Any], path: Path, what: str) -> Path:
    """``torch.save`` through a temporary file renamed into place. On a full disk the temporary
    file is removed (a half-written one would fail every retry at once) and the error names the
    folder, not PyTorch's "unexpected pos"; what was there before is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        full = (
            getattr(error, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < LOW_SPACE
        )
        tmp.unlink(missing_ok=True)
        if full:
            raise OSError(
                errno.ENOSPC,
                f"no space left on {path.parent} to write the {what} {path.name} "
                f"({shutil.disk_usage(path.parent).free // 2**20} MiB free once the partial file was removed): "
                "free space there or write elsewhere",
            ) from None
        raise
    return path


def load_checkpoint(path: str | Path) -> TrainingState:
    """Read a checkpoint (tensors and plain values only), or raise ``CorruptCheckpointError`` naming it."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return TrainingState(
            data["model"], data["optimizer"], data["scheduler"], int(data["epochs_done"]), data["config"],
            int(data.get("num_classes", 0)),
        )  # fmt: skip
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or not an MGN checkpoint ({_reason(error)}); delete it"
        ) from None


def save_model(model: MGN, config: ExperimentConfig | dict[str, Any], path: str | Path) -> Path:
    """The trained network alone (weights + config): what ``mgn extract/search/export`` read.

    ``config`` is the typed config or any dict form of it (``to_dict``'s, or ``dataclasses.asdict``'s,
    which holds enum members): it is checked and stored as plain values, so that the file loads with
    ``weights_only=True``; a dict that is not a config is refused here, not by every later command."""
    from mgn.config import ExperimentConfig
    from mgn.config_io import from_dict, to_dict

    typed = config if isinstance(config, ExperimentConfig) else from_dict(ExperimentConfig, dict(config))
    payload = {"model": model.state_dict(), "config": to_dict(typed), "num_classes": int(model.num_classes)}
    return _save_atomically(payload, Path(path), "model")


def load_model(path: str | Path) -> tuple[MGN, ExperimentConfig]:
    """An ``MGN`` in eval mode and its ``ExperimentConfig``, from ``save_model``'s file or a training
    checkpoint. ImageNet weights are not needed: the file holds the trained ones."""
    from dataclasses import replace

    from mgn.config import ExperimentConfig, Init
    from mgn.config_io import from_dict
    from mgn.model import MGN

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        config = from_dict(ExperimentConfig, data["config"])
        weights, num_classes = data["model"], int(data.get("num_classes", 0))
    except Exception as error:
        reason = _file_kind(path) or _reason(error)
        raise CorruptCheckpointError(f"{path} is not an MGN model or checkpoint ({reason})") from None
    if num_classes < 2:
        raise CorruptCheckpointError(
            f"{path} does not record its number of training identities (written by an older version): "
            f"load it with that version and save it again with mgn.checkpoint.save_model"
        )
    # The saved config is the architecture: branches, backbone, reduction, pooling.
    model = MGN(replace(config.model, init=Init.RANDOM), num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        raise CorruptCheckpointError(
            f"{path}: its weights do not fit the network its own config describes ({_reason(error)}); "
            "the file was edited or written by another program"
        ) from None
    return model.eval(), config


def weights_digest(model: torch.nn.Module) -> str:
    """A short fingerprint of a network's weights (names, shapes and values): the same for a model
    file and a training checkpoint of the same weights, different for any other network."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_kind(path: Path) -> str | None:
    """What a file that is not a PyTorch file is, from its first bytes (PyTorch writes zip archives);
    None when it is one (the loading error then says what is wrong inside)."""
    head = path.read_bytes()[:512]
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a PyTorch file: save_model writes one"
    return f"it is a text file, starting {head.decode('utf-8').splitlines()[0][:40]!r}; save_model writes the model file"


def _reason(error: Exception) -> str:
    """The first line of a loading error, without PyTorch's advice to unpickle untrusted files
    (``weights_only=False``), which this project never takes."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "weights_only" in line or "Weights only load failed" in line:
        return "not a file of tensors and plain values"
    return line[:200]
