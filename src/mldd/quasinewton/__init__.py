"""Quasi-Newton memories on flat 1-D vectors: L-BFGS (two-loop and compact) and L-SR1 (compact).

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §6.2, §7.2.
    [BNS94] Byrd, Nocedal, Schnabel. Representations of quasi-Newton matrices and their use in
    limited memory methods. Math. Program. 63, 1994.
"""

from mldd.quasinewton.lbfgs import LBFGSMemory
from mldd.quasinewton.lsr1 import LSR1Memory

__all__ = ["LBFGSMemory", "LSR1Memory"]
