"""Studies over many trainings: the ablation, label subsets, the paper's claims over seeds.

The top layer: may import every other.
"""
