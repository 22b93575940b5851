"""The catalogue of every metric Batch v1 carries: name, unit, and the resolution it is stored at.

The chunk codec stores each value as an integer count of `resolution` (the sensor's own
precision or finer), so a decoded series equals the shipped one to within half a resolution
step. Each unit has the range Batch v1 admits (`bounds`): a shipper sends a reading outside it as
null, so one glitched sensor costs one sample, not the batch. A test checks that this catalogue
and batch-v1.schema.json name the same metrics with the same bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

# The values a unit admits in Batch v1 (docs/batch-v1.md, "Bounds", says why each).
RANGE_BY_UNIT: dict[str, tuple[float, float]] = {
    "%": (0.0, 100.0),
    "bytes": (0.0, float(1 << 50)),
    "bytes/s": (0.0, float(1 << 50)),
    "count": (0.0, float((1 << 53) - 1)),
    "bitmask": (0.0, float((1 << 53) - 1)),
    "cores": (0.0, 65536.0),
    "W": (0.0, 100_000.0),
    "°C": (-100.0, 300.0),
    "MHz": (0.0, 100_000.0),
    "0/1": (0.0, 1.0),
}


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    resolution: float
    description: str
    # An optional series is sent only by nodes that have it, in batches where a sample has a value
    # (no InfiniBand, no cgroup quota, no memory sensor: no series); the schema does not require it.
    optional: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest value Batch v1 admits for it."""
        return RANGE_BY_UNIT[self.unit]


GPU_METRICS: tuple[Metric, ...] = (
    Metric("util_gpu", "%", 1.0, "time a kernel ran in the last sample period (NVML utilization.gpu)"),
    Metric("util_mem", "%", 1.0, "time device memory was read or written (NVML utilization.memory)"),
    Metric("mem_used", "bytes", 1 << 20, "device memory in use, stored at MiB resolution"),
    Metric("power_w", "W", 0.01, "board power draw (NVML reports mW)"),
    Metric("temp_c", "°C", 1.0, "GPU core temperature"),
    Metric("sm_clock_mhz", "MHz", 1.0, "current SM clock"),
    Metric("throttle_reasons", "bitmask", 1.0, "NVML clocks_event_reasons bitmask"),
    Metric("ecc_sbe_volatile", "count", 1.0, "corrected (single-bit) ECC errors since driver load"),
    Metric("ecc_dbe_volatile", "count", 1.0, "uncorrected (double-bit) ECC errors since driver load"),
    Metric("pcie_tx_bps", "bytes/s", 1024.0, "PCIe transmit throughput, stored at KiB/s resolution"),
    Metric("pcie_rx_bps", "bytes/s", 1024.0, "PCIe receive throughput, stored at KiB/s resolution"),
    Metric("retired_pages", "count", 1.0, "pages retired for ECC errors, both causes (pre-Ampere)"),
    Metric("remapped_rows_unc", "count", 1.0, "rows remapped for uncorrectable errors (Ampere and later)"),
    Metric("remap_failure", "0/1", 1.0, "1 when a row remapping failed: the GPU needs service"),
    Metric("mem_temp_c", "°C", 1.0, "HBM/memory temperature (NVML field MEMORY_TEMP)", optional=True),
)

HOST_METRICS: tuple[Metric, ...] = (
    Metric("cpu_util", "%", 0.1, "all cores' mean utilisation"),
    Metric("cpu_busy_cores", "cores", 0.01, "sum of per-core utilisation / 100: cores' worth of work"),
    Metric("mem_used", "bytes", 1 << 20, "host memory in use (total - available), MiB resolution"),
    Metric("disk_read_bps", "bytes/s", 1024.0, "disk read throughput"),
    Metric("disk_write_bps", "bytes/s", 1024.0, "disk write throughput"),
    Metric("net_rx_bps", "bytes/s", 1024.0, "network receive throughput, loopback excluded"),
    Metric("net_tx_bps", "bytes/s", 1024.0, "network transmit throughput, loopback excluded"),
    # RDMA traffic (NCCL over InfiniBand or RoCE) bypasses the kernel's network stack: /proc/net/dev
    # and net_*_bps do not see it. sysfs port_rcv_data / port_xmit_data count 4-byte words.
    Metric("ib_rx_bps", "bytes/s", 1024.0, "InfiniBand/RoCE receive throughput, all ports", optional=True),
    Metric("ib_tx_bps", "bytes/s", 1024.0, "InfiniBand/RoCE transmit throughput, all ports", optional=True),
    Metric(
        "cpu_quota_cores",
        "cores",
        0.01,
        "cgroup v2 CPU quota (cpu.max) of the GPU processes' cgroups, summed; absent when unlimited",
        optional=True,
    ),
)

MIG_METRICS: tuple[Metric, ...] = (
    Metric("mem_used", "bytes", 1 << 20, "MIG instance memory in use, MiB resolution"),
    Metric("util_sm", "%", 1.0, "SM utilisation of the instance (NVML GPM, Hopper and later)"),
)

BY_KIND: dict[str, dict[str, Metric]] = {
    "gpu": {m.name: m for m in GPU_METRICS},
    "host": {m.name: m for m in HOST_METRICS},
    "mig": {m.name: m for m in MIG_METRICS},
}
