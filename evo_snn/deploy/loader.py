"""Loading an export (``exported/<uid>/`` of ``evo_snn.deploy.export``) back as
ready-to-run nets: ``load_exported``, public as ``evo_snn.load_exported``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from evo_snn.config import Config
from evo_snn.models import build_model
from evo_snn.state.checkpoint import SPARSE_SUFFIX, load_sparse_state
from evo_snn.structure.genome import Genome
from evo_snn.structure.pruning import apply_masks


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict]:
    """Rebuild an export (``exported/<uid>/``) as ready-to-run nets: (student, teacher, info).

    student: the model of ``metrics.json``'s ``model_args`` with ``student.pt`` (or, when
    absent, ``student.sparse.npz``) loaded and the genome's masks attached with
    ``torch.nn.utils.prune.custom_from_mask``: its ``weight`` is ``weight_orig *
    weight_mask``, so an optimizer step on a fine-tuned student keeps the pruned weights
    at exactly zero (``evo_snn.structure.pruning.make_permanent`` folds the masks back into plain
    weights). Eval mode, trainable. teacher: the sparse teacher, frozen
    (``requires_grad_(False)``), eval mode. Both take ``x_seq: [T, N, C, H, W]`` (float,
    T, C, H, W = ``info['model_args']['frame_shape']``) and return ``[N, num_classes]``
    logits; call ``spikingjelly.activation_based.functional.reset_net`` after every batch.
    info: the metrics.json record plus ``path``, ``genome`` (``Genome``) and ``masks``
    ({layer: bool array, True = kept}).

    raises FileNotFoundError naming a missing file; ValueError when metrics.json lacks
    ``model_args`` (an export of an older version: export it again with
    ``python -m evo_snn.export RUN_DIR --pick uid=<uid>``) or when a weight is non-zero
    where its mask prunes.
    """
    d = Path(path)
    meta_path = d / "metrics.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; pass an exported/<uid>/ folder of evo_snn.deploy.export")
    info = json.loads(meta_path.read_text())
    if "model_args" not in info:
        raise ValueError(f"{meta_path} has no model_args (exported by an older evo_snn); export the member again with "
                         f"python -m evo_snn.export RUN_DIR --pick uid={info.get('uid', '<uid>')}")
    args = info["model_args"]
    model_cfg = Config.from_dict({"model": args["model"]}).model
    frame_shape, num_classes = tuple(int(s) for s in args["frame_shape"]), int(args["num_classes"])
    genome = Genome.load(d)
    masks = genome.mask_dict()

    def state_of(stem: str) -> dict:
        dense, sparse = d / f"{stem}.pt", d / f"{stem}{SPARSE_SUFFIX}"
        if dense.is_file():
            return torch.load(dense, map_location="cpu", weights_only=True)
        if sparse.is_file():
            return load_sparse_state(sparse)[0]
        raise FileNotFoundError(f"{dense} (or {sparse.name}) not found")

    nets = []
    for stem in ("student", "teacher"):
        net = build_model(model_cfg, frame_shape, num_classes)
        state = state_of(stem)
        net.load_state_dict(state)
        for name, m in masks.items():
            w = state[name + ".weight"].numpy()
            if np.any(w[~m] != 0):
                raise ValueError(f"{d / (stem + '.pt')}: {name}.weight is non-zero where the genome's mask prunes it")
        nets.append(net.to(device).eval())
    student, teacher = nets
    apply_masks(student, masks)
    teacher.requires_grad_(False)
    info.update(path=str(d), genome=genome, masks=masks)
    return student, teacher, info
