"""The real node: NVML for the GPUs, psutil and /proc for the host, as one `Source`."""

from __future__ import annotations

from node_shipper.host import HostCollector
from node_shipper.model import Inventory, Sample
from node_shipper.nvml import NvmlCollector


class RealSource:
    """Samples a real node. `open()` the NvmlCollector before building this."""

    def __init__(self, gpus: NvmlCollector, host: HostCollector) -> None:
        self._gpus = gpus
        self._host = host

    def inventory(self) -> Inventory:
        return Inventory(host=self._host.info(), gpus=self._gpus.infos())

    def sample(self, ts: float) -> Sample:
        gpus, mig, processes, events = self._gpus.sample(ts)
        host = self._host.sample(gpu_pids={p.pid for p in processes})  # their cgroups' CPU quota
        return Sample(ts=ts, host=host, gpus=gpus, mig=mig, processes=processes, events=events)

    def close(self) -> None:
        self._gpus.close()
