"""InfiniBand and RoCE traffic from sysfs: what NCCL moves between nodes and /proc/net/dev misses.

RDMA bypasses the kernel's network stack, so a node's interface counters stay flat while its
ranks exchange gigabytes a second. The RDMA core exposes per-port counters instead:
`/sys/class/infiniband/<device>/ports/<port>/counters/port_rcv_data` and `port_xmit_data`.
**They count 4-byte words** (the InfiniBand spec's PortRcvData/PortXmitData are in units of
4 octets); the kernel reports the 64-bit extended counters where the HCA has them.
"""

from __future__ import annotations

from pathlib import Path

SYSFS_INFINIBAND = Path("/sys/class/infiniband")
WORD_BYTES = 4  # port_rcv_data / port_xmit_data count 4-byte words


def ib_bytes(root: Path = SYSFS_INFINIBAND) -> tuple[int, int] | None:
    """(received, transmitted) bytes since the counters started, summed over every port of every
    RDMA device under `root`; None when there is no device or no port whose counters can be read.
    A port whose files are missing or garbled is left out (a port of a device being reset)."""
    try:
        devices = sorted(root.iterdir())
    except OSError:
        return None
    rx = tx = 0
    ports = 0
    for device in devices:
        try:
            port_dirs = sorted((device / "ports").iterdir())
        except OSError:
            continue
        for port in port_dirs:
            counters = port / "counters"
            try:
                words_rx = int((counters / "port_rcv_data").read_text())
                words_tx = int((counters / "port_xmit_data").read_text())
            except (OSError, ValueError):
                continue
            rx += words_rx * WORD_BYTES
            tx += words_tx * WORD_BYTES
            ports += 1
    return (rx, tx) if ports else None
