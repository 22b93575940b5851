"""Detectors: one module per family behind `base.Detector`, registered in `catalogue`."""
