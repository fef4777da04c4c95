"""A synthetic CT phantom written in DeepLesion's format (see docs/data.md)."""

from vision.data.phantom.writer import synthesize

__all__ = ["synthesize"]
