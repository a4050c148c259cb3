"""What an energy count reports (``evo_snn.evaluation.energy``), per sample: ``LayerOps``
of each connection layer, ``NeuronActivity`` of each neuron layer, and the
``EnergyReport`` that totals them, with the energy constants.

Estimated energy = E_AC x ACs + E_MAC x MACs (``EnergyReport.energy_pj``; the constants'
source and the definitions of every count: ``evo_snn.evaluation.energy``). Plain data:
no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

E_AC_PJ = 0.9
"""Energy of one accumulate, pJ: 32-bit float add at 45 nm (Horowitz, ISSCC 2014)."""
E_MAC_PJ = 4.6
"""Energy of one multiply-accumulate, pJ: 32-bit float multiply (3.7) + add (0.9) at 45 nm (Horowitz, ISSCC 2014)."""


@dataclass(frozen=True)
class LayerOps:
    """Operations of one connection layer, per sample.

    dense_acs / dense_macs: dense SynOps on spike input / on non-spike input;
    effective_acs / effective_macs: the pairs with a non-zero weight and a non-zero input;
    connection_sparsity: fraction of zero weights of the layer (at the end of the count).
    """

    dense_acs: float
    dense_macs: float
    effective_acs: float
    effective_macs: float
    connection_sparsity: float

    @property
    def synops(self) -> float:
        """Dense SynOps per sample: every synaptic operation, whatever the values."""
        return self.dense_acs + self.dense_macs

    @property
    def effective_ops(self) -> float:
        return self.effective_acs + self.effective_macs


@dataclass(frozen=True)
class NeuronActivity:
    """Output activity of one neuron layer, per sample.

    spikes: non-zero outputs per sample (summed over T); outputs: outputs per sample
    (neurons x T); firing_rate = spikes / outputs, a fraction in [0, 1] for spiking nodes.
    """

    spikes: float
    outputs: float

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.outputs if self.outputs else 0.0


@dataclass(frozen=True)
class EnergyReport:
    """Counts of one measurement, per sample; layers and neurons by qualified module name.

    samples: how many samples were counted; e_ac_pj / e_mac_pj: the energy constants used.
    """

    samples: int
    layers: dict[str, LayerOps]
    neurons: dict[str, NeuronActivity]
    e_ac_pj: float = E_AC_PJ
    e_mac_pj: float = E_MAC_PJ

    @property
    def synops(self) -> float:
        """Dense SynOps per sample, all layers."""
        return sum(v.synops for v in self.layers.values())

    @property
    def effective_acs(self) -> float:
        return sum(v.effective_acs for v in self.layers.values())

    @property
    def effective_macs(self) -> float:
        return sum(v.effective_macs for v in self.layers.values())

    @property
    def energy_pj(self) -> float:
        """Estimated energy per sample, pJ: e_ac_pj x effective ACs + e_mac_pj x effective MACs."""
        return self.e_ac_pj * self.effective_acs + self.e_mac_pj * self.effective_macs

    @property
    def dense_energy_pj(self) -> float:
        """The same estimate with every synapse operating at every time step (dense SynOps), pJ."""
        return sum(self.e_ac_pj * v.dense_acs + self.e_mac_pj * v.dense_macs for v in self.layers.values())

    @property
    def energy_fraction(self) -> float:
        """energy_pj / dense_energy_pj, in [0, 1] (0 for a net without operations): the
        ``energy`` objective of the search (minimised; worst value 1)."""
        dense = self.dense_energy_pj
        return self.energy_pj / dense if dense > 0 else 0.0

    @property
    def spikes(self) -> float:
        """Spikes (non-zero neuron outputs) per sample, all neuron layers."""
        return sum(v.spikes for v in self.neurons.values())

    @property
    def firing_rate(self) -> float:
        """Spikes per neuron per time step over all neuron layers (1 - activation sparsity)."""
        outputs = sum(v.outputs for v in self.neurons.values())
        return self.spikes / outputs if outputs else 0.0

    @property
    def activation_sparsity(self) -> float:
        """NeuroBench ``ActivationSparsity``: zero outputs / all outputs of the neuron layers."""
        return 1.0 - self.firing_rate if self.neurons else 0.0

    def metrics(self) -> dict:
        """The flat, JSON-able record of a fitness evaluation (evaluations.jsonl), per sample:
        ``synops``, ``effective_acs``, ``effective_macs``, ``energy_pj``, ``energy_fraction``,
        ``spikes``, ``firing_rate``, ``activation_sparsity``, and per layer ``layer_synops``,
        ``layer_effective_ops`` (ACs or MACs), ``layer_spikes``, ``layer_firing_rate``."""
        return {
            "synops": self.synops,
            "effective_acs": self.effective_acs,
            "effective_macs": self.effective_macs,
            "energy_pj": self.energy_pj,
            "energy_fraction": self.energy_fraction,
            "spikes": self.spikes,
            "firing_rate": self.firing_rate,
            "activation_sparsity": self.activation_sparsity,
            "layer_synops": {k: v.synops for k, v in self.layers.items()},
            "layer_effective_ops": {k: v.effective_ops for k, v in self.layers.items()},
            "layer_spikes": {k: v.spikes for k, v in self.neurons.items()},
            "layer_firing_rate": {k: v.firing_rate for k, v in self.neurons.items()},
        }
