"""mldd: multilevel and domain-decomposition trust-region training of neural networks."""

__version__ = "0.1.0"
