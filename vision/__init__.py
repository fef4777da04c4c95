"""CT data, the LesaNet network, training, evaluation, inference and retrieval.

Sub-packages are its layers, lowest first; a module imports only its own layer or lower
ones (tests/test_architecture.py): ``data`` → ``networks`` → ``metrics`` → ``engines`` →
``evaluation`` → ``reporting`` → ``experiments``; ``vision.config`` is below them all.
Submodules are imported directly (``from vision.networks.model import LesaNet``); these
files stay free of imports so that importing one part does not load torch for another.
"""
