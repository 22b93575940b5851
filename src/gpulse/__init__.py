"""gpulse core: contracts, codec, store, detectors, alert state and notifiers.

Plain Python and numpy; AWS is reached only through clients injected into `store` and friends.
"""

__version__ = "0.1.0"
