"""Genomes over sparse structure, and the variation operators of the search.

A ``Genome`` holds, for every prunable layer l, a prune ratio r_l and a binary mask
M_l (True = connection kept) with exactly round(r_l * n_l) zeros, n_l being the
layer's number of weights. It is pure data: numpy only, no torch. Masks are stored
packed (``numpy.packbits``) in ``masks.npz`` next to a small ``genome.json``.

Operators (``GenomeOps``), all of which keep the zero count equal to round(r_l*n_l):
- initial genome: magnitude pruning of the teacher at sampled ratios (Eq. 3 of the
  sparse-KD paper: W_pruned = W ⊙ M, the smallest |W| pruned), plus a small random
  swap of pruned and kept connections;
- ratio mutation: r_l += N(0, sigma), clipped to bounds; then prune the smallest
  surviving |W| or regrow the largest pruned |W| until the count matches;
- mask mutation: prune k random survivors and regrow k random pruned connections
  (pruning plus synaptic regeneration, as in SD-SNN), or informed
  (``genome.mask_mutation='magnitude'``): prune the survivors of smallest trained-student
  |W|, regrow the pruned connections of largest teacher |W|;
- crossover: per layer, each child takes (r_l, M_l) whole from one parent.

Smooth allocations (``genome.mutation='smooth'``, issue 23): a genome is a density law at
an exact total pruned count (``GenomeOps.law``: ERK with exponent gamma, or LAMP with a
temperature tau between global magnitude and LAMP), varied by perturbing its parameter and
by level switches between adjacent layers that keep the total exact (``level_switch``);
no crossover. The mask within each layer stays the teacher's magnitude mask.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evo_snn.structure import allocation as al
from evo_snn.structure.allocation import zeros_for  # noqa: F401  (genome.zeros_for, as before)
from evo_snn.atomic import atomic_write_bytes
from evo_snn.config import GenomeConfig




@dataclass(frozen=True, eq=False)
class Genome:
    """layers: prunable module names; ratios: prune ratios in [0, 1);
    masks: bool arrays shaped like each layer's weight, True = kept."""

    layers: tuple[str, ...]
    ratios: tuple[float, ...]
    masks: tuple[np.ndarray, ...]

    def __post_init__(self):
        if not (len(self.layers) == len(self.ratios) == len(self.masks)):
            raise ValueError("layers, ratios and masks must have the same length")
        for name, r, m in zip(self.layers, self.ratios, self.masks):
            if m.dtype != np.bool_:
                raise ValueError(f"mask of {name} must be bool, got {m.dtype}")
            if int((~m).sum()) != zeros_for(r, m.size):
                raise ValueError(f"mask of {name} has {int((~m).sum())} zeros, ratio {r} needs {zeros_for(r, m.size)}")

    @property
    def key(self) -> str:
        """Stable 16-hex-digit hash of the structure (layer names, shapes and masks)."""
        h = hashlib.sha1()
        for name, m in zip(self.layers, self.masks):
            h.update(name.encode())
            h.update(str(m.shape).encode())
            h.update(np.packbits(m.ravel()).tobytes())
        return h.hexdigest()[:16]

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights over all prunable layers, in [0, 1]."""
        total = sum(m.size for m in self.masks)
        return sum(int((~m).sum()) for m in self.masks) / max(total, 1)

    def layer_sparsity(self) -> dict[str, float]:
        return {n: float((~m).mean()) for n, m in zip(self.layers, self.masks)}

    def mask_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.layers, self.masks))

    # --------------------------------------------------------------- storage
    def to_json_dict(self) -> dict:
        return {
            "key": self.key,
            "layers": list(self.layers),
            "ratios": [float(r) for r in self.ratios],
            "shapes": [list(m.shape) for m in self.masks],
            "sparsity": self.sparsity,
            "masks_file": "masks.npz",
        }

    def save(self, directory: str | Path) -> None:
        """Write ``genome.json`` and ``masks.npz`` (packbits) atomically into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        packed = {f"layer{i}": np.packbits(m.ravel()) for i, m in enumerate(self.masks)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **packed)
        atomic_write_bytes(d / "masks.npz", buf.getvalue())
        atomic_write_bytes(d / "genome.json", json.dumps(self.to_json_dict(), indent=2).encode())

    @classmethod
    def load(cls, directory: str | Path) -> "Genome":
        """Inverse of ``save``; raises ValueError if the files disagree, and
        ``evo_snn.names.UnsafeNameError`` (a ValueError) when ``masks_file`` is not a plain
        name inside ``directory``."""
        from evo_snn.names import plain_name

        d = Path(directory)
        meta = json.loads((d / "genome.json").read_text())
        with np.load(d / plain_name(meta.get("masks_file", "masks.npz"), "masks_file", d / "genome.json"),
                     allow_pickle=False) as z:
            masks = []
            for i, shape in enumerate(meta["shapes"]):
                n = int(np.prod(shape))
                masks.append(np.unpackbits(z[f"layer{i}"], count=n).astype(bool).reshape(shape))
        g = cls(tuple(meta["layers"]), tuple(meta["ratios"]), tuple(masks))
        if g.key != meta["key"]:
            raise ValueError(f"{d}: masks.npz does not match the key in genome.json")
        return g


def magnitude_mask(weight_abs: np.ndarray, ratio: float) -> np.ndarray:
    """Mask pruning the round(ratio*n) smallest |W| (Eq. 3 of the sparse-KD paper).

    weight_abs: |W| of one layer, any shape; returns bool, same shape, True = kept.
    Numpy (not torch.nn.utils.prune.l1_unstructured) because a genome is torch-free;
    tests check parity with torch's L1Unstructured.
    """
    n = weight_abs.size
    k = zeros_for(ratio, n)
    mask = np.ones(n, dtype=bool)
    if k:
        order = np.argsort(weight_abs.ravel(), kind="stable")
        mask[order[:k]] = False
    return mask.reshape(weight_abs.shape)


def allocation_genome(method: str, teacher_abs: Mapping[str, np.ndarray], sparsity: float, **kwargs) -> Genome:
    """The allocation as a ``Genome`` over the layers of ``teacher_abs`` ({name: |W|}, e.g.
    ``pruning.weight_magnitudes`` or ``GenomeOps.abs``, in genome order): ratios z_l / n_l
    (not clipped to the search space's bounds, as ``GenomeOps.global_magnitude``) and the
    magnitude masks. kwargs as ``allocation.allocation_counts``."""
    counts = al.allocation_counts(method, teacher_abs, sparsity, **kwargs)
    masks = al.masks_from_counts(teacher_abs, counts)
    ratios = tuple(int(c) / m.size for c, m in zip(counts, masks))
    return Genome(tuple(teacher_abs), ratios, tuple(masks))


class GenomeOps:
    """Variation operators bound to the teacher's weight magnitudes and a search space.

    teacher_abs: {layer name: |W| numpy array} in the order of the genome's layers.
    All methods take a numpy ``Generator`` and return new genomes (inputs untouched).
    """

    def __init__(self, teacher_abs: dict[str, np.ndarray], cfg: GenomeConfig):
        self.layers = tuple(teacher_abs)
        self.abs = teacher_abs
        self.cfg = cfg
        self.params: dict[str, tuple] = {}  # genome key -> (law, sparsity, gamma | tau | per-stage gammas) of smooth genomes
        self.stage = al.stages([a.shape if a.ndim else (1,) for a in teacher_abs.values()])  # [L] stage of each layer
        self.n_stages = int(self.stage.max()) + 1 if len(self.stage) else 0

    def _stage_exponents(self) -> bool:
        return bool(getattr(self.cfg, "stage_exponents", False))

    def _clip(self, r: float) -> float:
        return float(min(max(r, self.cfg.ratio_min), self.cfg.ratio_max))

    def magnitude(self, ratios: dict[str, float] | list[float]) -> Genome:
        rs = [self._clip(r) for r in (ratios.values() if isinstance(ratios, dict) else ratios)]
        masks = tuple(magnitude_mask(self.abs[n], r) for n, r in zip(self.layers, rs))
        return Genome(self.layers, tuple(rs), masks)

    def global_magnitude(self, sparsity: float) -> Genome:
        """One magnitude threshold over all prunable weights (Eq. 3 of the sparse-KD
        paper applied globally): the round(sparsity * N) smallest |W| of the whole
        net are pruned, N being the number of prunable weights.

        sparsity in [0, 1). Per-layer ratios follow from the threshold (zeros_l / n_l)
        and are not clipped to the search space's bounds: this is the one-shot
        baseline as a user would run it. Ties are broken by layer order, then position.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        flat = np.concatenate([self.abs[n].ravel() for n in self.layers])
        keep = np.ones(flat.size, dtype=bool)
        keep[np.argsort(flat, kind="stable")[: zeros_for(sparsity, flat.size)]] = False
        masks, ratios, start = [], [], 0
        for n in self.layers:
            size = self.abs[n].size
            m = keep[start:start + size].reshape(self.abs[n].shape)
            start += size
            masks.append(m)
            ratios.append(int((~m).sum()) / size)
        return Genome(self.layers, tuple(ratios), tuple(masks))

    def uniform_magnitude(self, ratio: float) -> Genome:
        """Every layer pruned by its own |W| at the same ratio in [0, 1) (not clipped)."""
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        masks = tuple(magnitude_mask(self.abs[n], ratio) for n in self.layers)
        return Genome(self.layers, (float(ratio),) * len(self.layers), masks)

    def allocation(self, method: str, sparsity: float, **kwargs) -> Genome:
        """The allocation rule ``method`` ('global', 'uniform', 'erk', 'lamp', ...) at exactly
        round(sparsity x N) pruned weights over the teacher's |W| (``allocation_genome``:
        magnitude within each layer; ratios z_l / n_l, not clipped to the bounds)."""
        g = allocation_genome(method, self.abs, sparsity, **kwargs)
        law = {"erk": ("erk", float(kwargs.get("power", 1.0))), "lamp": ("lamp", 1.0), "global": ("lamp", 0.0)}.get(method)
        if law is not None and law[0] == "erk" and self._stage_exponents():  # one gamma per stage, all equal here
            law = ("erk", (law[1],) * self.n_stages)
        if law is not None:  # the same counts as GenomeOps.law(law, sparsity, param): a smooth mutation can perturb it
            self.params.setdefault(g.key, (law[0], float(sparsity), law[1]))
        return g

    # ------------------------------------------------------------------ smooth allocations (genome.mutation='smooth')
    def law(self, law: str, sparsity: float, param) -> Genome:
        """A density-law genome at exactly round(sparsity x N) pruned weights, magnitude
        within each layer. law 'erk': ERK densities with exponent gamma = ``param`` >= 0
        (``allocation.erk``'s power; 0 = uniform, 1 = ERK), or with a tuple ``param`` one
        gamma per stage (``allocation.stages``: layers of equal output channels; negative
        entries count as 0; ``genome.stage_exponents``); 'lamp': one global threshold on
        lamp_score ** tau x |W| ** (1 - tau), tau = ``param`` (0 = global magnitude, 1 = LAMP).
        The parameters are remembered (``params``) so that ``mutate`` can perturb them."""
        if law == "erk" and isinstance(param, (tuple, list, np.ndarray)):
            param = tuple(max(0.0, float(v)) for v in param)
            if len(param) != self.n_stages:
                raise ValueError(f"law 'erk' with per-stage exponents needs {self.n_stages}, got {len(param)}")
            counts = al.erk(self.abs, sparsity, np.asarray(param)[self.stage])
        elif law == "erk":
            counts = al.erk(self.abs, sparsity, max(0.0, float(param)))
        elif law == "lamp":
            counts = al.tempered_lamp(self.abs, sparsity, float(param))
        else:
            raise ValueError(f"unknown density law {law!r}; known: ['erk', 'lamp']")
        g = self.from_counts(counts)
        self.params[g.key] = (law, float(sparsity), param if isinstance(param, tuple) else float(param))
        return g

    def from_counts(self, counts) -> Genome:
        """The genome pruning the counts[l] smallest teacher |W| of each layer (ratios counts / n)."""
        masks = tuple(magnitude_mask_count(self.abs[n], int(c)) for n, c in zip(self.layers, counts))
        return Genome(self.layers, tuple(int(c) / m.size for c, m in zip(counts, masks)), masks)

    def level_switch(self, g: Genome, rng: np.random.Generator, fraction: float | None = None) -> Genome:
        """One level switch at an exact total: q pruned weights move between two adjacent
        layers (l, l + 1 in genome order, one of them chosen at random, the direction too):
        one layer prunes q more of its smallest teacher |W|, the other q fewer, q = max(1,
        round(fraction x the smaller layer's weights)) capped by what the layers hold
        (``genome.level_switch_fraction`` by default). The total pruned count is unchanged;
        the masks are the teacher's magnitude masks at the new counts (a genome with one layer
        is returned as it is)."""
        fraction = self.cfg.level_switch_fraction if fraction is None else fraction
        counts = np.array([int((~m).sum()) for m in g.masks], dtype=np.int64)
        sizes = np.array([m.size for m in g.masks], dtype=np.int64)
        if len(counts) < 2:
            return g
        i = int(rng.integers(len(counts) - 1))
        a, b = (i, i + 1) if rng.random() < 0.5 else (i + 1, i)  # a prunes fewer, b more
        q = max(1, int(round(fraction * min(sizes[a], sizes[b]))))
        q = int(min(q, counts[a], sizes[b] - counts[b]))
        if q <= 0:
            return g
        counts[a] -= q
        counts[b] += q
        return self.from_counts(counts)

    def mutate_smooth(self, g: Genome, rng: np.random.Generator) -> Genome:
        """Smooth mutation at an exact total: the density law's parameter (gamma or tau, when
        this genome's law is known, ``params``) moves by N(0, ``smooth_sigma``) at the same
        sparsity, then with probability ``level_switch_prob`` one ``level_switch`` (at least
        one switch for a genome whose law is unknown, e.g. after a resume). Weights never move
        at random between arbitrary layers; within a layer the mask stays magnitude."""
        p = self.params.get(g.key)
        child = g
        if p is not None:
            law, s, param = p
            if isinstance(param, tuple):  # per-stage gammas: each moves
                step = rng.normal(0.0, self.cfg.smooth_sigma, size=len(param))
                child = self.law(law, s, tuple(float(v + d) for v, d in zip(param, step)))  # law clamps at 0
            else:
                child = self.law(law, s, param + rng.normal(0.0, self.cfg.smooth_sigma))
        if p is None or rng.random() < self.cfg.level_switch_prob:
            child = self.level_switch(child, rng)
        return child

    def random_smooth(self, rng: np.random.Generator) -> Genome:
        """An initial smooth genome: law 'erk' or 'lamp' at random, sparsity uniform over
        [ratio_min, ratio_max], gamma uniform in [0, 2] or tau uniform in [0, 1.5]."""
        law = "erk" if rng.random() < 0.5 else "lamp"
        s = float(rng.uniform(self.cfg.ratio_min, self.cfg.ratio_max))
        if law == "erk" and self._stage_exponents():
            return self.law(law, s, tuple(float(v) for v in rng.uniform(0.0, 2.0, size=self.n_stages)))
        return self.law(law, s, float(rng.uniform(0.0, 2.0 if law == "erk" else 1.5)))

    def random(self, rng: np.random.Generator) -> Genome:
        """Initial genome: uniform ratios within bounds, magnitude masks, small random swap
        (with ``genome.mutation='smooth'``: ``random_smooth``)."""
        if getattr(self.cfg, "mutation", "free") == "smooth":
            return self.random_smooth(rng)
        ratios = rng.uniform(self.cfg.ratio_min, self.cfg.ratio_max, size=len(self.layers))
        g = self.magnitude(list(ratios))
        masks = tuple(_swap(m, round(self.cfg.init_swap_fraction * int((~m).sum())), rng) for m in g.masks)
        return Genome(g.layers, g.ratios, masks)

    def mutate(self, g: Genome, rng: np.random.Generator, student_abs: dict[str, np.ndarray] | None = None) -> Genome:
        """Per layer: ratio mutation with prob ratio_mutation_prob, then mask swap with prob mask_mutation_prob.

        The swap prunes k survivors and regrows k pruned connections (k = mask_swap_fraction
        of the layer): at random (``genome.mask_mutation='random'``), or informed
        (``'magnitude'``): prune the k survivors of smallest trained-student |W|
        (``student_abs``, the parent's student; the teacher's |W| without one) and regrow
        the k pruned connections of largest teacher |W|.
        """
        if getattr(self.cfg, "mutation", "free") == "smooth":
            return self.mutate_smooth(g, rng)
        ratios, masks = list(g.ratios), list(g.masks)
        for i, name in enumerate(g.layers):
            if rng.random() < self.cfg.ratio_mutation_prob:
                ratios[i] = self._clip(ratios[i] + rng.normal(0.0, self.cfg.ratio_mutation_sigma))
                masks[i] = _match_count(masks[i], zeros_for(ratios[i], masks[i].size), self.abs[name])
            if rng.random() < self.cfg.mask_mutation_prob:
                k = max(1, round(self.cfg.mask_swap_fraction * masks[i].size))
                if self.cfg.mask_mutation == "magnitude":
                    prune_by = student_abs[name] if student_abs is not None and name in student_abs else self.abs[name]
                    masks[i] = _informed_swap(masks[i], k, prune_by, self.abs[name])
                else:
                    masks[i] = _swap(masks[i], k, rng)
        return Genome(g.layers, tuple(ratios), tuple(masks))

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> tuple[Genome, Genome]:
        """Layer-wise uniform crossover: each layer's (r_l, M_l) goes whole to one child.
        With ``genome.mutation='smooth'`` the parents are returned as they are (a layer-wise
        exchange would miss the exact totals; the smooth search varies by mutation only)."""
        if getattr(self.cfg, "mutation", "free") == "smooth":
            return a, b
        ra, rb, ma, mb = list(a.ratios), list(b.ratios), list(a.masks), list(b.masks)
        for i in range(len(a.layers)):
            if rng.random() < 0.5:
                ra[i], rb[i] = rb[i], ra[i]
                ma[i], mb[i] = mb[i], ma[i]
        return Genome(a.layers, tuple(ra), tuple(ma)), Genome(b.layers, tuple(rb), tuple(mb))


def magnitude_mask_count(weight_abs: np.ndarray, zeros: int) -> np.ndarray:
    """Mask pruning exactly the ``zeros`` smallest |W| (ties by position, as ``magnitude_mask``):
    ``allocation.mask_from_count``, the rule layer's one implementation."""
    return al.mask_from_count(weight_abs, zeros)


def _match_count(mask: np.ndarray, zeros: int, weight_abs: np.ndarray) -> np.ndarray:
    """Prune the smallest surviving |W| or regrow the largest pruned |W| until ``zeros`` match."""
    flat, w = mask.ravel().copy(), weight_abs.ravel()
    diff = zeros - int((~flat).sum())
    if diff > 0:
        kept = np.flatnonzero(flat)
        flat[kept[np.argsort(w[kept], kind="stable")[:diff]]] = False
    elif diff < 0:
        pruned = np.flatnonzero(~flat)
        flat[pruned[np.argsort(-w[pruned], kind="stable")[:-diff]]] = True
    return flat.reshape(mask.shape)


def _informed_swap(mask: np.ndarray, k: int, prune_abs: np.ndarray, regrow_abs: np.ndarray) -> np.ndarray:
    """Prune the k survivors of smallest ``prune_abs`` and regrow the k pruned connections of
    largest ``regrow_abs`` (count unchanged; ties broken by position)."""
    flat = mask.ravel().copy()
    kept, pruned = np.flatnonzero(flat), np.flatnonzero(~flat)
    k = int(min(k, kept.size, pruned.size))
    if k <= 0:
        return mask
    drop = kept[np.argsort(prune_abs.ravel()[kept], kind="stable")[:k]]
    grow = pruned[np.argsort(-regrow_abs.ravel()[pruned], kind="stable")[:k]]
    flat[drop] = False
    flat[grow] = True
    return flat.reshape(mask.shape)


def _swap(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Prune k random survivors and regrow k random pruned connections (count unchanged)."""
    flat = mask.ravel().copy()
    kept, pruned = np.flatnonzero(flat), np.flatnonzero(~flat)
    k = int(min(k, kept.size, pruned.size))
    if k <= 0:
        return mask
    flat[rng.choice(kept, k, replace=False)] = False
    flat[rng.choice(pruned, k, replace=False)] = True
    return flat.reshape(mask.shape)
