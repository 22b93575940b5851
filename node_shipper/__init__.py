"""gpulse node_shipper: the agent on each GPU node (NVML + host metrics → signed Batch v1 posts).

Depends only on nvidia-ml-py (the `pynvml` module), requests, psutil, and `gpulse.wire`.
"""

__version__ = "0.1.0"
