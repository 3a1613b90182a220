"""Data levels that grow (mldd.multilevel.row_growth): the rule, the rows it adds, the cost it
charges, RMTR's use of it and its checkpoint."""

import copy
import io

import pytest
import torch
from multilevel_toys import regression_data, resmlp

import mldd.optim
from mldd.multilevel import Hierarchy, IdentityTransfer, Level, RowGrowth
from mldd.multilevel.row_growth import as_row_growth, growable_levels
from mldd.objective import EvalCounters


def _data_hierarchy(levels=2, n=48, ratio=0.125):
    net = resmlp(depth=5)
    return Hierarchy.build(net, levels, "data", n_rows=n, data_ratio=ratio)


def _counters(levels, n_g):
    out = []
    for k in n_g:
        c = EvalCounters()
        c.n_g = k
        out.append(c)
    assert len(out) == levels
    return out


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"factor": 1.0}, "factor"), ({"factor": True}, "factor"), ({"window": 0}, "window"),
    ({"rejections": 4, "window": 3}, "rejections=4"), ({"max_fraction": 0.0}, "max_fraction"),
    ({"max_fraction": 1.5}, "max_fraction"), ({"seed": -1}, "seed")])
def test_bad_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        RowGrowth(**kw)


def test_row_growth_argument_forms():
    assert as_row_growth(None) is None and as_row_growth(False) is None
    assert isinstance(as_row_growth(True), RowGrowth)
    assert as_row_growth({"factor": 3}).factor == 3.0
    g = RowGrowth()
    assert as_row_growth(g) is g
    with pytest.raises(ValueError, match="factor, rejections"):
        as_row_growth({"speed": 2})
    with pytest.raises(ValueError, match="row_growth must be"):
        as_row_growth("yes")


def test_grows_after_rejections_in_window_keeping_old_rows_and_charging_old_cost():
    h = _data_hierarchy()
    coarse = h.levels[0]
    old_rows, old_cost = coarse.rows.clone(), coarse.cost
    assert old_rows.numel() == 6 and old_cost == pytest.approx(6 / 48)
    rule = RowGrowth(rejections=2, window=3)
    counters = _counters(2, [10, 5])
    # (level, accepted): level 1 tested the correction of level 0. One rejection in the
    # window of 3: nothing yet; a second one: growth.
    assert rule.observe(h, [(1, False), (1, True)], counters) == ([], 0.0)
    events, offset = rule.observe(h, [(1, False)], counters)
    assert [(e.level, e.old, e.new) for e in events] == [(0, 6, 12)]
    rows = coarse.rows
    assert rows.numel() == 12 and torch.equal(rows, rows.sort().values)
    assert rows.unique().numel() == 12 and int(rows.max()) < 48
    assert torch.isin(old_rows, rows).all()
    assert coarse.cost == pytest.approx(12 / 48)
    # the 10 past coarse evaluations stay charged at 6/48: the new share over-counts them
    assert offset == pytest.approx(10 * (6 / 48 - 12 / 48))
    # the window restarts after a growth
    assert rule.observe(h, [(1, False)], counters) == ([], 0.0)


def test_stops_at_max_fraction():
    h = _data_hierarchy()
    rule = RowGrowth(rejections=1, window=1, max_fraction=0.5)
    sizes = []
    for _ in range(4):
        rule.observe(h, [(1, False)], _counters(2, [0, 0]))
        sizes.append(h.levels[0].rows.numel())
    assert sizes == [12, 24, 24, 24]
    assert growable_levels(h) == [0]  # still fewer rows than the fine level, just capped


def test_three_data_levels_stay_nested():
    h = _data_hierarchy(levels=3, ratio=0.25)  # 48 → 12 → 3 rows
    rule = RowGrowth(rejections=1, window=1, factor=3, max_fraction=1.0)
    events, _ = rule.observe(h, [(2, False), (1, False)], _counters(3, [0, 0, 0]))
    assert sorted((e.level, e.old, e.new) for e in events) == [(0, 3, 9), (1, 12, 36)]
    assert torch.isin(h.levels[0].rows, h.levels[1].rows).all()
    events, _ = rule.observe(h, [(1, False)], _counters(3, [0, 0, 0]))
    assert [(e.level, e.old, e.new) for e in events] == [(0, 9, 27)]
    assert torch.isin(h.levels[0].rows, h.levels[1].rows).all()


def test_same_seed_same_rows_and_depth_levels_never_grow():
    a, b = _data_hierarchy(), _data_hierarchy()
    for h in (a, b):
        RowGrowth(rejections=1, window=1, seed=3).observe(h, [(1, False)], _counters(2, [0, 0]))
    assert torch.equal(a.levels[0].rows, b.levels[0].rows)
    depth = Hierarchy.build(resmlp(depth=5), 2, "depth")
    assert growable_levels(depth) == []
    assert RowGrowth(rejections=1, window=1).observe(
        depth, [(1, False)], _counters(2, [0, 0])) == ([], 0.0)


# -- RMTR with growing data levels ----------------------------------------------------------------
def _closure(X, Y):
    """MSE on the rows; coarse evaluations (rows given) add a concave term, so that the coarse
    model has curvature the fine loss lacks and some coarse corrections are rejected."""
    def closure(m, rows):
        if rows is None:
            return ((m(X) - Y) ** 2).mean()
        sq = sum((p ** 2).sum() for p in m.parameters())
        return ((m(X[rows]) - Y[rows]) ** 2).mean() - 0.05 * sq
    return closure


def _rmtr(growth):
    X, Y = regression_data()
    net = resmlp(depth=5)
    opt = mldd.optim.RMTR(net.parameters(), model=net, levels=2, coarsen="data",
                          n_rows=X.shape[0], hierarchy_options={"data_ratio": 0.125},
                          row_growth=growth)
    return net, opt, _closure(X, Y)


def test_rmtr_grows_on_rejections_and_counts_cost_at_the_share_of_the_time(caplog):
    _, opt, closure = _rmtr({"rejections": 1, "window": 1})
    counts = [0, 0]
    expected = 0.0
    grown = []
    with caplog.at_level("INFO", logger="mldd.optim.multilevel"):
        for _ in range(12):
            costs = [lev.cost for lev in opt.hierarchy]
            opt.step(closure)
            now = [max(c.n_f, c.n_g) + c.n_hvp for c in opt.level_counters]
            expected += sum((a - b) * c for a, b, c in zip(now, counts, costs, strict=True))
            counts = now
            assert opt.last_info["grad_evals"] == pytest.approx(expected, rel=1e-12)
            assert opt.last_info["cost"] == opt.last_info["grad_evals"]
            grown += opt.last_info.get("rows_grown", [])
    assert opt.last_info["n_coarse_rejected"] >= 1
    assert grown[0] == (0, 6, 12)
    assert opt.hierarchy.levels[0].rows.numel() == grown[-1][2]
    assert "level 0 now evaluates 12 rows (was 6)" in caplog.text


def test_rmtr_without_growth_keeps_its_rows():
    _, opt, closure = _rmtr(None)
    rows = opt.hierarchy.levels[0].rows.clone()
    for _ in range(8):
        opt.step(closure)
    assert opt.last_info["n_coarse_rejected"] >= 1
    assert torch.equal(opt.hierarchy.levels[0].rows, rows)
    assert "rows_grown" not in opt.last_info


def test_row_growth_needs_data_levels():
    net = resmlp(depth=5)
    with pytest.raises(ValueError, match="row_growth=True needs a hierarchy with data levels"):
        mldd.optim.RMTR(net.parameters(), model=net, levels=2, coarsen="depth", row_growth=True)
    with pytest.raises(ValueError, match="row_growth"):
        mldd.optim.RMTR(net.parameters(), row_growth=True)


def test_checkpoint_restores_grown_rows_costs_and_rule():
    net, opt, closure = _rmtr({"rejections": 1, "window": 2})
    for _ in range(6):
        opt.step(closure)
    assert opt.hierarchy.levels[0].rows.numel() > 6  # it grew before the checkpoint
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    net_state = copy.deepcopy(net.state_dict())

    def cont(o):
        out = []
        for _ in range(6):
            o.step(closure)
            out.append((o.last_info["grad_evals"], o.hierarchy.levels[0].rows.clone(),
                        torch.cat([p.detach().flatten() for p in o.param_groups[0]["params"]])))
        return out

    expected = cont(opt)
    net2, opt2, _ = _rmtr({"rejections": 1, "window": 2})
    net2.load_state_dict(net_state)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=False))
    got = cont(opt2)
    for (c1, r1, x1), (c2, r2, x2) in zip(expected, got, strict=True):
        assert c1 == c2 and torch.equal(r1, r2) and torch.equal(x1, x2)


def test_a_level_under_all_rows_needs_n_rows_to_grow():
    net = resmlp(depth=5)
    n = sum(p.numel() for p in net.parameters())
    coarse = Level(net, IdentityTransfer(n), torch.arange(6), cost=0.125, kind="data")
    h = Hierarchy([coarse, Level(net, kind="fine")])  # no n_rows: no pool to draw rows from
    assert growable_levels(h) == []
    h = Hierarchy([Level(net, IdentityTransfer(n), torch.arange(6), cost=0.125, kind="data"),
                   Level(net, kind="fine")], n_rows=48)
    assert growable_levels(h) == [0]
