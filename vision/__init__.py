"""CT data, preprocessing, the LesaNet network, training, evaluation, inference and retrieval.

Submodules are imported directly (``from vision.model import LesaNet``); this file stays
free of imports so that importing one part does not load torch for another.
"""
