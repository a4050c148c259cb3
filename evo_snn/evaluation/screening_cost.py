"""The counted cost of screening (``evo_snn.evaluation.screening``) in one currency,
training-sample equivalents.

At the start of a run ``measure_forward_cost_ratio`` times a forward
batch (eval mode, no grad) against a KD training batch (teacher forward, student
forward and backward, Adam step) of ``kd.batch_size`` samples on the screening
device: ``forward_cost_ratio`` is the training-sample equivalents of one forward
sample. Every forward a screen makes, BN recalibration included, is counted
(``forward_samples``) and converted (``counted_samples`` = forward_samples x ratio);
``StructureSearch.screen_compute_samples`` sums them over the run and
``counted_compute`` adds them to the KD rows' ``train_samples``.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from evo_snn.training.train import to_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_forward_cost_ratio(teacher: nn.Module, x_seq: torch.Tensor, y: torch.Tensor, *, kd_teacher: bool = True,
                               repeats: int = 3) -> float:
    """Training-sample equivalents of one forward sample: the time of a forward batch
    (a copy of ``teacher``, eval mode, no grad) over the time of a KD training batch (a
    trainable copy: the frozen teacher's forward when ``kd_teacher``, the student's forward,
    KL + cross-entropy, backward, Adam step) on the same ``x_seq [T, B, ...]`` / ``y [B]``,
    each the median of ``repeats`` timed batches after one warm-up, on the teacher's device.
    The torch RNG state is left as it was. Returns a float > 0."""
    device = next(teacher.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        x_seq, y = to_device(x_seq, device), to_device(y, device)
        fwd = copy.deepcopy(teacher).requires_grad_(False).eval()
        frozen = copy.deepcopy(teacher).requires_grad_(False).eval()
        student = copy.deepcopy(teacher).requires_grad_(True).train()
        opt = torch.optim.Adam(student.parameters(), lr=1e-6)

        def forward():
            with torch.no_grad():
                fwd(x_seq)
            functional.reset_net(fwd)

        def train():
            with torch.no_grad():
                z_t = frozen(x_seq) if kd_teacher else None
            if kd_teacher:
                functional.reset_net(frozen)
            z_s = student(x_seq)
            loss = F.cross_entropy(z_s, y)
            if z_t is not None:
                loss = loss + F.kl_div(F.log_softmax(z_s, 1), F.log_softmax(z_t, 1), reduction="batchmean", log_target=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            functional.reset_net(student)

        def timed(fn) -> float:
            fn()  # warm-up
            out = []
            for _ in range(max(1, repeats)):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                out.append(time.perf_counter() - t0)
            return float(np.median(out))

        t_f, t_t = timed(forward), timed(train)
    return max(t_f, 1e-12) / max(t_t, 1e-12)


def row_counted_samples(row: dict) -> float | None:
    """The counted compute of a screening row of evaluations.jsonl (``rung`` 'screen'):
    its ``counted_samples`` (forward_samples x forward_cost_ratio, training-sample
    equivalents); None for any other row."""
    if row.get("rung") != "screen":
        return None
    if "counted_samples" in row:
        return float(row["counted_samples"])
    return float(row.get("forward_samples", 0)) * float(row.get("forward_cost_ratio", 1.0))


def counted_compute(rows, default_train_samples: int = 0) -> float:
    """The run's counted compute in training-sample equivalents from evaluations.jsonl rows:
    ``train_samples`` of every KD row with status 'ok' (``default_train_samples`` when it has
    none, and for a 'failed' row) plus ``row_counted_samples`` of every screening row."""
    total = 0.0
    for row in rows:
        screen = row_counted_samples(row)
        if screen is not None:
            total += screen
        elif row.get("status") == "ok":
            total += float(row.get("train_samples", default_train_samples))
        elif row.get("status") == "failed":
            total += float(default_train_samples)
    return total
