import math

import pytest
import torch

from mldd.globalization import cubic_minimizer, strong_wolfe
from mldd.problems.functions import rosenbrock, rosenbrock_start


def _evaluator(fn, x, d):
    def ev(t):
        xt = (x + t * d).requires_grad_(True)
        f = fn(xt)
        (g,) = torch.autograd.grad(f, xt)
        return float(f.detach()), g
    return ev


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    f = fn(x)
    return float(f.detach()), torch.autograd.grad(f, x)[0]


@pytest.mark.parametrize("t0", [1e-4, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("c2", [0.1, 0.9])
def test_strong_wolfe_conditions_on_rosenbrock(t0, c2):
    x = rosenbrock_start(10)
    f0, g0 = _grad(rosenbrock, x)
    d = -g0 / g0.norm()
    res = strong_wolfe(_evaluator(rosenbrock, x, d), d, f0, float(g0 @ d), t0, c1=1e-4, c2=c2)
    assert res.success, res.reason
    assert res.f <= f0 + 1e-4 * res.t * float(g0 @ d)
    assert abs(res.dphi) <= c2 * abs(float(g0 @ d)) + 1e-12


def test_quadratic_exact_step():
    a = torch.tensor([1.0, 10.0], dtype=torch.float64)
    fn = lambda x: 0.5 * (a * x * x).sum()  # noqa: E731
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    f0, g0 = _grad(fn, x)
    d = -g0
    res = strong_wolfe(_evaluator(fn, x, d), d, f0, float(g0 @ d), 1.0, c2=0.1)
    t_star = float(g0 @ g0) / float(g0 @ (a * g0))
    assert res.success
    assert res.t == pytest.approx(t_star, rel=0.05)


def test_nan_region_is_backed_off():
    # f is NaN beyond t = 0.5; the minimiser along d is at t = 0.3.
    def ev(t):
        if t > 0.5:
            return math.nan, torch.full((1,), math.nan, dtype=torch.float64)
        return (t - 0.3) ** 2, torch.tensor([2 * (t - 0.3)], dtype=torch.float64)

    d = torch.ones(1, dtype=torch.float64)
    res = strong_wolfe(ev, d, 0.09, -0.6, 1.0)
    assert 0.0 < res.t <= 0.5
    assert math.isfinite(res.f) and res.sufficient_decrease


def test_all_nan_returns_zero_step():
    def ev(t):
        return math.nan, torch.full((1,), math.nan)

    res = strong_wolfe(ev, torch.ones(1), 1.0, -1.0, 1.0, max_evals=10)
    assert res.t == 0.0 and not res.success and res.g is None


def test_rejects_ascent_and_bad_constants():
    with pytest.raises(ValueError, match="descent"):
        strong_wolfe(lambda t: (0.0, torch.zeros(1)), torch.ones(1), 0.0, 1.0)
    with pytest.raises(ValueError, match="c1 < c2"):
        strong_wolfe(lambda t: (0.0, torch.zeros(1)), torch.ones(1), 0.0, -1.0, c1=0.5, c2=0.1)


def test_cubic_minimizer_exact_for_cubic():
    # f(t) = (t-1)^3 - 3 (t-1)  → local min at t = 2
    f = lambda t: (t - 1) ** 3 - 3 * (t - 1)  # noqa: E731
    df = lambda t: 3 * (t - 1) ** 2 - 3  # noqa: E731
    t = cubic_minimizer(1.5, f(1.5), df(1.5), 3.0, f(3.0), df(3.0), 1.5, 3.0)
    assert t == pytest.approx(2.0, abs=1e-12)
    # no real minimiser (a² < d1·d2) → midpoint of the bounds
    assert cubic_minimizer(0.0, 0.0, 3.0, 1.0, 2.0, 3.0, 0.0, 1.0) == pytest.approx(0.5)
