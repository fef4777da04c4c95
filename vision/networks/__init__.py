"""The LesaNet network and its losses (torch modules and functions).

Imports ``vision.data`` at most.
"""
