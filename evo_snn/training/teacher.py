"""The dense teacher: trained once per run (or loaded with ``--teacher PATH``)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from evo_snn.atomic import atomic_write_bytes
from evo_snn.config import Config
from evo_snn.data import Splits
from evo_snn.training.kd import kd_mode
from evo_snn.models import build_model
from evo_snn.training.train import accuracy, ce_loss, cpu_state, eval_batch_size, train_steps


class TeacherLoadError(ValueError):
    """A ``--teacher`` checkpoint is missing or does not fit the configured model."""


PARTIAL_FILE = "partial.pt"  # in teacher/: the unfinished teacher training after its last full epoch


def train_teacher(cfg: Config, splits: Splits, seed: int, device: torch.device, progress: bool = True,
                  checkpoint: Path | None = None) -> tuple[nn.Module, dict]:
    """Train the dense teacher with cross-entropy for ``cfg.teacher.epochs`` epochs.

    checkpoint: a file (``teacher/partial.pt``) written atomically after every epoch but
    the last (``train_steps``'s snapshot plus the validation curve, seed and epochs); when
    it exists and was written for the same seed and ``teacher`` settings, training goes on
    from its epoch and ends with the same teacher as an uninterrupted run. A checkpoint
    that cannot be read or belongs to other settings is ignored (with a warning) and
    training starts over. The file is left in place; the caller deletes it once the
    teacher is saved.

    Returns (model in eval mode, metrics with ``val_accuracy`` in [0, 1], ``epochs``,
    ``train_loss``, ``wall_s``). The validation accuracy after each epoch is logged
    under ``val_curve``; it is not used to pick an epoch (the last one is kept).
    Trained under ``cfg.train`` (AMP, channels-last); validated in float32.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(cfg.model, splits.frame_shape, splits.num_classes).to(device)
    tc = cfg.teacher
    curve: list[float] = []
    key = {"seed": int(seed), "teacher": json.dumps(dataclasses.asdict(tc), sort_keys=True),
           "model": json.dumps(dataclasses.asdict(cfg.model), sort_keys=True, default=str)}
    resume_from = _read_partial(checkpoint, key) if checkpoint is not None else None
    if resume_from is not None:
        curve = [float(v) for v in resume_from["curve"]]
        tqdm.write(f"teacher: continuing from epoch {resume_from['epoch']}/{tc.epochs} ({checkpoint})")

    def save_partial(state: dict) -> None:
        buf = io.BytesIO()
        torch.save({**state, "curve": list(curve), "key": key}, buf)
        atomic_write_bytes(checkpoint, buf.getvalue())

    def on_epoch(epoch: int) -> None:
        curve.append(accuracy(model, splits.val, eval_batch_size(cfg.train, device), channels_last=cfg.train.channels_last))
        model.train()
        if progress:
            tqdm.write(f"teacher epoch {epoch}/{tc.epochs}: val accuracy {curve[-1]:.3f}")

    loss = train_steps(model, splits.train, epochs=tc.epochs, batch_size=tc.batch_size, lr=tc.lr, weight_decay=tc.weight_decay,
                       loss_fn=ce_loss, seed=seed, progress="teacher" if progress else None, epoch_end=on_epoch,
                       hot_path=cfg.train, snapshot=save_partial if checkpoint is not None else None,
                       resume_from=resume_from)
    model.eval()
    # the last epoch's validation pass already measured the final model
    val_accuracy = curve[-1] if len(curve) == tc.epochs else accuracy(model, splits.val, eval_batch_size(cfg.train, device),
                                                                     channels_last=cfg.train.channels_last)
    metrics = {"val_accuracy": val_accuracy, "epochs": tc.epochs, "train_loss": loss,
               "val_curve": curve, "wall_s": time.perf_counter() - t0, "source": "trained"}
    return model, metrics


def _read_partial(path: Path, key: dict) -> dict | None:
    """The teacher checkpoint at ``path`` if it was written for ``key``, else None (a
    warning for one that cannot be read or was written for other settings)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        tqdm.write(f"warning: {path} cannot be read ({type(e).__name__}); the teacher is trained from the start")
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        tqdm.write(f"warning: {path} was written for other teacher settings; the teacher is trained from the start")
        return None
    return state


SPLIT_FILE = "split.json"  # beside teacher.pt: which train/validation split trained it


def split_fingerprint(cfg: Config, splits: Splits) -> dict:
    """What a teacher's validation accuracy depends on: data set, split seed,
    val_fraction, split sizes and a SHA-1 of the validation labels and frames
    (``[N, T, C, H, W]`` in storage dtype, read in chunks)."""
    h = hashlib.sha1(splits.val.labels.numpy().tobytes())
    for start in range(0, len(splits.val), 256):
        x, _ = splits.val[list(range(start, min(start + 256, len(splits.val))))]
        h.update(x.contiguous().numpy().tobytes())
    return {"dataset": cfg.dataset, "split_seed": cfg.split_seed(), "val_fraction": cfg.data.val_fraction,
            "train_size": len(splits.train), "val_size": len(splits.val), "val_sha1": h.hexdigest()}


def check_split(teacher_path: str | Path, fingerprint: dict) -> str | None:
    """Compare the ``split.json`` beside ``teacher_path`` with ``fingerprint``.

    Returns a warning when there is none (a teacher from an older run: the split cannot
    be checked); raises TeacherLoadError when the teacher was trained on another
    train/validation split: its validation accuracy, and every fitness measured
    against it, would be read off samples it trained on.
    """
    path = Path(teacher_path).parent / SPLIT_FILE
    if not path.is_file():
        return f"{path} not found: cannot check that the teacher was trained on this run's train/validation split"
    saved = json.loads(path.read_text())
    diff = [k for k in fingerprint if saved.get(k) != fingerprint[k]]
    if diff:
        raise TeacherLoadError(
            f"{teacher_path} was trained on another train/validation split ({', '.join(f'{k}: {saved.get(k)!r} there, {fingerprint[k]!r} here' for k in diff if k != 'val_sha1')}"
            f"{'; ' if len(diff) > 1 and 'val_sha1' in diff else ''}{'validation samples differ' if 'val_sha1' in diff else ''}); "
            "pass the same --seed and data.val_fraction as the run that trained it, or train a new teacher")
    return None


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


@dataclass
class Teachers:
    """The networks that teach in a run.

    dense: the dense SNN teacher (eval mode, on the run's device); metrics: its
    ``val_accuracy`` and training record; split: the train/validation split
    fingerprint to store beside teacher.pt (None when it cannot be vouched for: a
    ``--teacher`` without split.json); ann_state / ann_metrics: the ReLU twin's
    state_dict (CPU) and metrics, ``kd.mode='ann'`` only; fresh: not yet saved in the run.
    """

    dense: nn.Module
    metrics: dict
    split: dict | None = None
    ann_state: dict[str, torch.Tensor] | None = None
    ann_metrics: dict | None = None
    fresh: bool = True


def prepare(cfg: Config, splits: Splits, device: torch.device, *, run_teacher_dir: Path, resume: bool,
            teacher_path: str | None = None, progress: bool = True) -> Teachers:
    """The run's teachers: reloaded from ``run_teacher_dir`` when resuming, else loaded
    from ``teacher_path`` (its split checked, ``check_split``) or trained; plus the ANN
    twin for ``kd.mode='ann'`` (reloaded or trained). Writes no files.

    raises TeacherLoadError (missing or unfitting checkpoint, another split).
    """
    t0 = time.perf_counter()
    split = None
    if resume:  # the run's own teacher(s)
        dense, loaded = load_teacher(run_teacher_dir / "teacher.pt", cfg, splits, device)
        mpath = run_teacher_dir / "metrics.json"
        metrics = json.loads(mpath.read_text()) if mpath.is_file() else loaded
        if abs(metrics.get("val_accuracy", loaded["val_accuracy"]) - loaded["val_accuracy"]) > 1e-6:
            tqdm.write(f"warning: the teacher's validation accuracy is {loaded['val_accuracy']:.4f} now, "
                       f"{metrics['val_accuracy']:.4f} in {mpath}: has the data set changed?")
    elif teacher_path:
        split = split_fingerprint(cfg, splits)
        warning = check_split(teacher_path, split)
        if warning:
            tqdm.write(f"warning: {warning}")
            split = None  # not vouched for: not stored
        dense, metrics = load_teacher(teacher_path, cfg, splits, device)
    else:
        dense, metrics = train_teacher(cfg, splits, cfg.search.seed, device, progress,
                                       checkpoint=run_teacher_dir / PARTIAL_FILE)
        split = split_fingerprint(cfg, splits)
    tqdm.write(f"dense teacher: validation accuracy {metrics['val_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")
    teachers = Teachers(dense, metrics, split, fresh=not resume)
    needs_ann = kd_mode(cfg.kd.mode).needs_ann
    if needs_ann and resume:
        teachers.ann_state = read_state_dict(run_teacher_dir / "ann_teacher.pt", "a kd.mode 'ann' run needs its ANN teacher to resume")
    elif needs_ann:  # ANN-teacher KD: train the ReLU twin of the teacher once
        ann, teachers.ann_metrics = train_teacher(replace(cfg, model=cfg.model.ann_twin()), splits, cfg.search.seed, device, progress)
        teachers.ann_state = cpu_state(ann)
        tqdm.write(f"ANN teacher: validation accuracy {teachers.ann_metrics['val_accuracy']:.3f}")
    return teachers
