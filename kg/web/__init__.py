"""The lesion browser on ``kg serve``: lesion, label, search and SPARQL pages.

:mod:`kg.web.app` (the pages and their routes), :mod:`kg.web.queries` (the bound SPARQL
behind them), :mod:`kg.web.patches` (patch PNGs from the cache or the source slice),
:mod:`kg.web.evaluation` (per-label figures of a run / an evaluation); templates and the
style sheet ship in the package. See docs/kg.md, "The lesion browser".
"""

from kg.web.app import BrowserConfig, Describe, Description, LesionBrowser
from kg.web.evaluation import EvaluationError, load_evaluation
from kg.web.patches import PatchError, PatchSource

__all__ = [
    "BrowserConfig",
    "Describe",
    "Description",
    "EvaluationError",
    "LesionBrowser",
    "PatchError",
    "PatchSource",
    "load_evaluation",
]
