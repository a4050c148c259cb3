"""evo_snn: neuroevolutionary structure search for sparse spiking neural networks."""

__version__ = "0.1.0"
