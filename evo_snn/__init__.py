"""evo_snn: neuroevolutionary structure search for sparse spiking neural networks."""

__version__ = "0.1.0"

from evo_snn import malloc as _malloc
from evo_snn.threads import openmp_defaults as _openmp_defaults

_openmp_defaults()  # GOMP_SPINCOUNT before torch loads (evo_snn.threads); EVO_SNN_THREADS=torch skips it
_malloc.APPLIED.update(_malloc.malloc_defaults())  # glibc's mmap / trim thresholds; EVO_SNN_MALLOC=system skips it


def __getattr__(name: str):
    """``evo_snn.load_exported`` (``evo_snn.deploy.export.load_exported``), imported on first use so
    that ``import evo_snn`` stays light (pure-data modules load no torch)."""
    if name == "load_exported":
        from evo_snn.deploy.export import load_exported

        return load_exported
    raise AttributeError(f"module 'evo_snn' has no attribute {name!r}")


__all__ = ["__version__", "load_exported"]
