"""What runs a network: run directories, training, prediction, embeddings and retrieval.

Imports lower layers only (``data``, ``networks``, ``metrics``).
"""
