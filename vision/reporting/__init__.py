"""What a person reads: PNG figures, prediction and retrieval panels.

Imports lower layers only (up to ``evaluation``).
"""
