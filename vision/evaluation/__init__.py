"""Evaluation as in the paper: calibration, Table 1, Table 2 and their breakdowns.

Imports lower layers only (up to ``engines``).
"""
