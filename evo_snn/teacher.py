"""The dense teacher: trained once per run (or loaded with ``--teacher PATH``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .config import Config
from .data import Splits
from .models import build_model
from .train import accuracy, ce_loss, train_steps


class TeacherLoadError(ValueError):
    """A ``--teacher`` checkpoint is missing or does not fit the configured model."""


def train_teacher(cfg: Config, splits: Splits, seed: int, device: torch.device, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the dense teacher with cross-entropy for ``cfg.teacher.epochs`` epochs.

    Returns (model in eval mode, metrics with ``val_accuracy`` in [0, 1], ``epochs``,
    ``train_loss``, ``wall_s``). The validation accuracy after each epoch is logged
    under ``val_curve``; it is not used to pick an epoch (the last one is kept).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(cfg.model, splits.frame_shape, splits.num_classes).to(device)
    tc = cfg.teacher
    curve: list[float] = []

    def on_epoch(epoch: int) -> None:
        curve.append(accuracy(model, splits.val))
        model.train()
        if progress:
            tqdm.write(f"teacher epoch {epoch}/{tc.epochs}: val accuracy {curve[-1]:.3f}")

    loss = train_steps(model, splits.train, epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr, weight_decay=tc.weight_decay,
                       loss_fn=ce_loss, seed=seed, progress="teacher" if progress else None, epoch_end=on_epoch)
    model.eval()
    # the last epoch's validation pass already measured the final model
    val_accuracy = curve[-1] if len(curve) == tc.epochs else accuracy(model, splits.val)
    metrics = {"val_accuracy": val_accuracy, "epochs": tc.epochs, "train_loss": loss,
               "val_curve": curve, "wall_s": time.perf_counter() - t0, "source": "trained"}
    return model, metrics


def read_state_dict(path: str | Path, hint: str) -> dict[str, torch.Tensor]:
    """A state_dict saved by a run (``torch.load(weights_only=True)``, on the CPU).

    raises TeacherLoadError naming ``path`` (missing: with ``hint`` on what to pass).
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherLoadError(f"teacher checkpoint {path} not found; {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TeacherLoadError(f"{path}: not a torch state_dict ({e})") from e


def load_teacher(path: str | Path, cfg: Config, splits: Splits, device: torch.device) -> tuple[nn.Module, dict]:
    """Load a dense teacher state_dict (``torch.load(weights_only=True)``); raises TeacherLoadError."""
    path = Path(path)
    state = read_state_dict(path, "pass the teacher.pt of an earlier run")
    model = build_model(cfg.model, splits.frame_shape, splits.num_classes)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise TeacherLoadError(f"{path} does not fit model {cfg.model.name!r} with this config "
                               f"(set model.* as in the run that trained it): {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return model, {"val_accuracy": accuracy(model, splits.val), "source": str(path)}
