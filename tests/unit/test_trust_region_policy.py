import math

import pytest

from mldd.globalization import TrustRegionPolicy, ratio

P = TrustRegionPolicy()


@pytest.mark.parametrize(
    "ared, pred, accepted, factor",
    [
        (1.0, 1.0, True, 2.5),        # very successful: expand
        (0.95, 1.0, True, 2.5),
        (0.5, 1.0, True, 1.0),        # successful: keep
        (0.05, 1.0, True, 1.0),       # eta1 boundary: keep
        (0.01, 1.0, True, 0.25),      # accepted (rho > rho_tol) but shrink
        (0.005, 1.0, False, 0.25),    # rho == rho_tol: reject
        (-1.0, 1.0, False, 0.25),     # loss increased
        (math.nan, 1.0, False, 0.25),  # NaN trial
        (-math.inf, 1.0, False, 0.25),  # Inf trial loss
        (1.0, 0.0, False, 0.25),      # no predicted decrease
        (1.0, -1.0, False, 0.25),
    ],
)
def test_truth_table(ared, pred, accepted, factor):
    d = P.decide(2.0, ared, pred, on_boundary=True)
    assert d.accepted is accepted
    assert d.radius == pytest.approx(2.0 * factor)


def test_expand_on_boundary_only():
    p = TrustRegionPolicy(expand_on_boundary_only=True)
    assert p.decide(1.0, 1.0, 1.0, on_boundary=False).radius == 1.0
    assert p.decide(1.0, 1.0, 1.0, on_boundary=True).radius == 2.5


def test_clamps():
    assert P.decide(1e14, 1.0, 1.0).radius == 1e14
    assert P.decide(1e-14, -1.0, 1.0).radius == 1e-14


def test_ratio_non_finite():
    assert ratio(math.nan, 1.0) == -math.inf
    assert ratio(1.0, math.inf) == -math.inf
    assert ratio(1.0, 2.0) == 0.5


@pytest.mark.parametrize("bad", [{"gamma1": 1.5}, {"gamma2": 0.5}, {"eta1": 0.95, "eta2": 0.9},
                                 {"rho_tol": 0.1}, {"radius_min": 0.0}])
def test_invalid_policy(bad):
    with pytest.raises(ValueError, match="invalid trust-region policy"):
        TrustRegionPolicy(**bad)
