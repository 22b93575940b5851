"""gpulse node_shipper: the agent on each GPU node (NVML + host metrics → signed Batch v1 posts).

Depends only on nvidia-ml-py (the `pynvml` module), urllib3, psutil, and `gpulse_wire` (the Batch v1
contract, its own distribution). Installed on nodes as the `gpulse-shipper` distribution.
"""

__version__ = "0.1.0"
