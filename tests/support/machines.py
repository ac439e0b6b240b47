"""Made-up machines for the fit check and the speed estimate: no dependence on this one's RAM or GPUs."""

from __future__ import annotations

from webui.core.hardware.machine import GpuFacts, MachineFacts

GB = 10**9


def machine(available_gb: float = 16.0, gpus: tuple[GpuFacts, ...] = ()) -> MachineFacts:
    """A made-up machine: no dependence on this one's RAM."""
    return MachineFacts(
        total_ram_bytes=int(32 * GB),
        available_ram_bytes=int(available_gb * GB),
        cores=8,
        threads=7,
        bandwidth_bytes_per_s=20e9,
        compute_weights_per_s=40e9,
        dispatch_seconds=1e-6,
        gpus=gpus,
    )


class FakeMachine:
    """Stands in for MachineProbe at the Service seam."""

    def __init__(self, facts: MachineFacts) -> None:
        self._facts = facts

    def facts(self, threads: int | None = None, *, measure_speed: bool = True) -> MachineFacts:
        """The facts given at construction, whatever is asked."""
        return self._facts
