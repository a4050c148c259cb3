"""``PerWorker``: a callable built from its factory once per process, in the process that
uses it (a Ray actor, or the driver for the serial evaluator); ``build``: what an
evaluator runs before its first job.

Below the evaluator (``evo_snn.evaluation.evaluator``) and the grouped jobs (``evo_snn.evaluation.grouped``),
which both build on it: this module imports nothing of evo_snn (torch only inside
``build``, for a device).
"""

from __future__ import annotations

import inspect
from typing import Callable


def _takes_device(factory: Callable) -> bool:
    try:
        return "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


class PerWorker:
    """A callable built from ``factory()`` on first use, once per process.

    ``PerWorker(partial(GenomeFitness, ctx))(genome, seed)`` builds ``GenomeFitness(ctx)``
    on the first call (or on ``build()``) and calls it; pickled (to a Ray actor), only
    the factory travels, and the receiving process builds its own.
    """

    def __init__(self, factory: Callable[[], Callable]):
        self.factory = factory
        self._fn = None

    def build(self, device: str | None = None) -> Callable:
        """The built callable (built now on the first call; errors of ``factory`` propagate).

        device: a torch device string (e.g. 'cuda:0', chosen by a Ray actor from its GPU
        ids) passed as ``factory(device=torch.device(device))`` when the factory has a
        ``device`` parameter (``GenomeFitness`` has); None = the factory's default."""
        if self._fn is None:
            if device is not None and _takes_device(self.factory):
                import torch

                self._fn = self.factory(device=torch.device(device))
            else:
                self._fn = self.factory()
        return self._fn

    def __call__(self, *job):
        return self.build()(*job)

    def __getstate__(self):
        return {"factory": self.factory}

    def __setstate__(self, state):
        self.factory, self._fn = state["factory"], None


def build(fn, device: str | None = None) -> None:
    """``fn.build()`` where ``fn`` has one; a ``PerWorker`` whose factory takes ``device``
    gets ``device`` (a torch device string) when it is given."""
    if isinstance(fn, PerWorker):
        fn.build(device)
        return
    method = getattr(fn, "build", None)
    if callable(method):
        method()
