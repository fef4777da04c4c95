"""Numbers on arrays: multi-label metrics, error bars, a run's calibrated thresholds.

Imports lower layers only (``data``, ``networks``).
"""
