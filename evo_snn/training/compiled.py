"""Compiled students (``train.compile: true``, issue 26 item 4; off by default).

``torch.compile`` traces a module once per input shape; a search trains a fresh student
for every genome, which would compile again each time. ``Persistent`` keeps one module
per worker (a student, or the sparse teacher that teaches it) and its compiled wrapper:
each genome's weights, buffers and masks are copied into that module in place
(``Persistent.load``), so one compilation serves every genome of the run (the shapes do
not change; the last, shorter batch of a pass compiles once more).

On a CUDA device the wrapper is compiled with ``mode='reduce-overhead'``: CUDA graphs
with static input buffers (torch copies each batch into them). Untested until a GPU run
(no GPU was lent while this was written): ``benchmarks/gpu_session.sh`` times it. On
the CPU it is inductor's default mode (C++ kernels, needs a compiler: ``g++``).

Values are those of the eager nets up to float rounding (fused kernels), not bit for
bit: a run with ``train.compile: true`` does not reproduce a run without it.
``tests/test_hot_path_26.py`` checks the loss curve against eager training.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

from evo_snn.config import ConfigError


def compile_mode(device: torch.device | str) -> str:
    """The ``torch.compile`` mode for ``device``: 'reduce-overhead' (CUDA graphs) on CUDA,
    'default' elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def check_compile() -> None:
    """raises ConfigError naming why ``torch.compile`` cannot run here (no inductor backend,
    or a torch without it)."""
    if not hasattr(torch, "compile"):
        raise ConfigError(f"train.compile: torch {torch.__version__} has no torch.compile; set train.compile=false")
    try:
        importlib.import_module("torch._inductor")  # the backend torch.compile uses
    except Exception as e:  # noqa: BLE001 - any import failure is the reason
        raise ConfigError(f"train.compile: torch.compile's inductor backend does not load ({e}); set train.compile=false") from None


class Persistent:
    """One module of a worker, built once by ``build()`` and compiled once; ``load(src)``
    copies a net of the same architecture into it in place and returns the compiled
    wrapper (``module`` is the eager module: its state_dict, hooks, validation pass)."""

    def __init__(self, build: Callable[[], nn.Module], device: torch.device | str):
        check_compile()
        self.module = build()
        self.compiled = torch.compile(self.module, mode=compile_mode(device), dynamic=False)

    def load(self, src: nn.Module, *, trainable: bool) -> nn.Module:
        """``src``'s parameters and buffers copied into ``module`` (the same tensors, kept,
        so the compiled graphs stay valid), its neurons reset, gradients cleared, train or
        eval mode as ``src``; raises ValueError for a net of another architecture."""
        dst, new = self.module.state_dict(), src.state_dict()
        if dst.keys() != new.keys() or any(dst[k].shape != new[k].shape for k in dst):
            raise ValueError("Persistent.load: the net differs from the persistent module's architecture")
        with torch.no_grad():
            for k, t in dst.items():
                t.copy_(new[k])
        for p in self.module.parameters():
            p.grad = None
        self.module.requires_grad_(trainable)
        self.module.train(src.training)
        functional.reset_net(self.module)
        return self.compiled
