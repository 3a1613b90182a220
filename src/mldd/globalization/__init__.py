"""Globalisation: the decision to trust a step (trust-region policy, strong-Wolfe line search)."""

from mldd.globalization.line_search import LineSearchResult, cubic_minimizer, strong_wolfe
from mldd.globalization.trust_region import TRDecision, TrustRegionPolicy, ratio

__all__ = [
    "LineSearchResult",
    "TRDecision",
    "TrustRegionPolicy",
    "cubic_minimizer",
    "ratio",
    "strong_wolfe",
]
