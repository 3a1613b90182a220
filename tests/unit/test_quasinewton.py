"""Unit tests of the L-BFGS and L-SR1 memories (float64, small n, dense references)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mldd.quasinewton import LBFGSMemory, LSR1Memory

DT = torch.float64


def _spd(n: int, gen: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen, dtype=DT)
    return A @ A.T + n * torch.eye(n, dtype=DT)


def _sym(n: int, gen: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, n, generator=gen, dtype=DT)
    return 0.5 * (A + A.T)


def _dense(matvec, n: int) -> torch.Tensor:
    return torch.stack([matvec(e) for e in torch.eye(n, dtype=DT)], dim=1)


# --------------------------------------------------------------------------- L-BFGS
def _filled_lbfgs(n=12, k=6, history=4, seed=0) -> tuple[LBFGSMemory, list]:
    gen = torch.Generator().manual_seed(seed)
    A = _spd(n, gen)
    mem = LBFGSMemory(history=history)
    pairs = []
    for _ in range(k):
        s = torch.randn(n, generator=gen, dtype=DT)
        y = A @ s
        assert mem.update(s, y)
        pairs.append((s, y))
    return mem, pairs


def test_lbfgs_secant_conditions():
    mem, pairs = _filled_lbfgs()
    s, y = pairs[-1]
    torch.testing.assert_close(mem.apply_inverse(y), s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mem.matvec(s), y, rtol=1e-10, atol=1e-10)


def test_lbfgs_gamma_and_history():
    mem, pairs = _filled_lbfgs(k=6, history=4)
    assert len(mem) == 4
    s, y = pairs[-1]
    assert mem.gamma == pytest.approx(float(s @ y) / float(y @ y), rel=1e-14)
    # the stored pairs are the newest four
    for (s_m, y_m), (s_p, y_p) in zip(zip(*mem.pairs(), strict=True), pairs[-4:], strict=True):
        assert torch.equal(s_m, s_p) and torch.equal(y_m, y_p)


def test_lbfgs_matvec_is_inverse_of_two_loop_and_matches_dense():
    n = 10
    mem, _ = _filled_lbfgs(n=n, k=3, history=5, seed=3)
    B = _dense(mem.matvec, n)
    H = _dense(mem.apply_inverse, n)
    torch.testing.assert_close(B @ H, torch.eye(n, dtype=DT), rtol=0, atol=1e-9)
    torch.testing.assert_close(B, B.T, rtol=0, atol=1e-9)
    assert float(torch.linalg.eigvalsh(B).min()) > 0
    # Dense BFGS recursion from B0 = I/γ with the same pairs.
    Bd = torch.eye(n, dtype=DT) / mem.gamma
    for s, y in zip(*mem.pairs(), strict=True):
        Bs = Bd @ s
        Bd = Bd - torch.outer(Bs, Bs) / (s @ Bs) + torch.outer(y, y) / (y @ s)
    torch.testing.assert_close(B, Bd, rtol=1e-9, atol=1e-9)


def test_lbfgs_empty_is_identity():
    mem = LBFGSMemory()
    v = torch.randn(7, dtype=DT)
    assert len(mem) == 0 and mem.gamma == 1.0
    torch.testing.assert_close(mem.apply_inverse(v), v)
    torch.testing.assert_close(mem.matvec(v), v)


def test_lbfgs_rejects_bad_pairs():
    mem = LBFGSMemory()
    s = torch.ones(5, dtype=DT)
    assert not mem.update(s, -s)  # negative curvature
    assert not mem.update(s, torch.zeros(5, dtype=DT))  # zero curvature
    assert not mem.update(s, torch.tensor([1.0, -1.0, 1e-12, 0, 0], dtype=DT))  # yᵀs ≈ 0
    assert not mem.update(s, torch.full((5,), float("nan"), dtype=DT))
    assert not mem.update(torch.full((5,), float("inf"), dtype=DT), s)
    assert len(mem) == 0
    assert mem.update(s, 2 * s)
    with pytest.raises(ValueError, match="1-D"):
        mem.update(s[None], s[None])
    with pytest.raises(ValueError):
        LBFGSMemory(history=0)


def test_lbfgs_reset():
    mem, _ = _filled_lbfgs()
    mem.reset()
    assert len(mem) == 0 and mem.gamma == 1.0
    v = torch.randn(12, dtype=DT)
    torch.testing.assert_close(mem.matvec(v), v)


def test_lbfgs_state_dict_round_trip_bit_exact():
    mem, _ = _filled_lbfgs(seed=5)
    v = torch.randn(12, dtype=DT)
    sd = mem.state_dict()
    other = LBFGSMemory(history=99)
    other.load_state_dict(sd)
    assert other.history == mem.history and len(other) == len(mem)
    assert torch.equal(other.apply_inverse(v), mem.apply_inverse(v))
    assert torch.equal(other.matvec(v), mem.matvec(v))
    # the state dict holds copies
    sd["s"][0].zero_()
    assert torch.equal(other.apply_inverse(v), mem.apply_inverse(v))


# --------------------------------------------------------------------------- L-SR1
def _filled_lsr1(n=15, k=5, history=5, seed=0, A=None, **kw) -> tuple[LSR1Memory, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if A is None:
        A = _sym(n, gen) * 3.0
    mem = LSR1Memory(history=history, **kw)
    for _ in range(k):
        s = torch.randn(n, generator=gen, dtype=DT)
        mem.update(s, A @ s)
    return mem, A


def _dense_compact(mem: LSR1Memory, n: int) -> torch.Tensor:
    gamma, Psi, Minv = mem.compact()
    B = gamma * torch.eye(n, dtype=DT)
    if Psi is not None:
        B = B + Psi @ Minv @ Psi.T
    return B


@pytest.mark.parametrize("rule", ["fixed", "yy_sy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lsr1_interpolates_all_pairs_of_a_quadratic(rule, seed):
    n = 15
    mem, _ = _filled_lsr1(n=n, k=4, history=4, seed=seed, gamma_rule=rule)
    assert len(mem) == 4
    for s, y in zip(*mem.pairs(), strict=True):
        torch.testing.assert_close(mem.matvec(s), y, rtol=1e-8, atol=1e-8)


def test_lsr1_newest_secant_for_general_pairs():
    gen = torch.Generator().manual_seed(4)
    mem = LSR1Memory(history=3)
    for _ in range(6):
        s = torch.randn(9, generator=gen, dtype=DT)
        y = torch.randn(9, generator=gen, dtype=DT)
        if mem.update(s, y):
            torch.testing.assert_close(mem.matvec(s), y, rtol=1e-9, atol=1e-9)
    assert len(mem) == 3
    # the ring buffer has wrapped: compact() must still be ordered like M⁻¹
    torch.testing.assert_close(_dense(mem.matvec, 9), _dense_compact(mem, 9), rtol=0, atol=1e-10)
    s_list, _ = mem.pairs()
    assert torch.equal(s_list[-1], s)


def test_lsr1_matches_dense_sr1_recursion():
    n = 12
    mem, _ = _filled_lsr1(n=n, k=4, history=10, seed=7, gamma_init=0.7)
    B = _dense(mem.matvec, n)
    torch.testing.assert_close(B, _dense_compact(mem, n), rtol=1e-12, atol=1e-12)
    Bd = 0.7 * torch.eye(n, dtype=DT)
    for s, y in zip(*mem.pairs(), strict=True):
        r = y - Bd @ s
        Bd = Bd + torch.outer(r, r) / (r @ s)
    torch.testing.assert_close(B, Bd, rtol=1e-9, atol=1e-9)
    assert float(torch.linalg.eigvalsh(B).min()) < 0  # an indefinite model is allowed


def test_lsr1_skip_rule():
    n = 6
    mem = LSR1Memory(gamma_init=1.0)
    s = torch.randn(n, dtype=DT)
    assert not mem.update(s, s.clone())  # y = Bs: nothing to learn (zero denominator)
    assert not mem.update(s, torch.full((n,), float("nan"), dtype=DT))
    assert not mem.update(torch.zeros(n, dtype=DT), s)
    # sᵀ(y − Bs) tiny relative to ‖s‖‖y − Bs‖
    r = torch.zeros(n, dtype=DT)
    r[0], r[1] = s[1], -s[0]  # r ⟂ s
    assert not mem.update(s, s + r)
    assert len(mem) == 0
    assert mem.update(s, 3 * s)
    with pytest.raises(ValueError, match="gamma_rule"):
        LSR1Memory(gamma_rule="bogus")
    with pytest.raises(ValueError, match="gamma_init"):
        LSR1Memory(gamma_init=0.0)


def test_lsr1_history_and_reset():
    mem, _ = _filled_lsr1(k=8, history=3, seed=2, gamma_rule="yy_sy")
    assert len(mem) == 3
    _, Psi, Minv = mem.compact()
    assert Psi is not None and Psi.shape == (15, 3) and Minv is not None and Minv.shape == (3, 3)
    mem.reset()
    assert len(mem) == 0 and mem.gamma == 1.0 and mem.compact() == (1.0, None, None)
    v = torch.randn(15, dtype=DT)
    torch.testing.assert_close(mem.matvec(v), v)


def test_lsr1_yy_sy_gamma():
    gen = torch.Generator().manual_seed(0)
    A = _spd(8, gen)
    mem = LSR1Memory(gamma_rule="yy_sy")
    s = torch.randn(8, generator=gen, dtype=DT)
    y = A @ s
    mem.update(s, y)
    assert mem.gamma == pytest.approx(float(y @ y) / float(s @ y), rel=1e-14)
    # non-positive sᵀy keeps the previous γ
    g0 = mem.gamma
    s2 = torch.randn(8, generator=gen, dtype=DT)
    mem.update(s2, -2.0 * s2)
    assert mem.gamma == g0


def test_lsr1_state_dict_round_trip_bit_exact():
    mem, _ = _filled_lsr1(k=7, history=4, seed=9, gamma_rule="yy_sy")
    v = torch.randn(15, dtype=DT)
    other = LSR1Memory()
    other.load_state_dict(mem.state_dict())
    assert other.gamma == mem.gamma and len(other) == len(mem) and other.gamma_rule == "yy_sy"
    assert torch.equal(other.matvec(v), mem.matvec(v))
    g1, P1, M1 = mem.compact()
    g2, P2, M2 = other.compact()
    assert g1 == g2 and torch.equal(P1, P2) and torch.equal(M1, M2)
    # further updates stay identical
    s = torch.randn(15, dtype=DT)
    y = torch.randn(15, dtype=DT)
    assert mem.update(s, y) == other.update(s, y)
    assert torch.equal(other.matvec(v), mem.matvec(v))


@pytest.mark.parametrize("rule", ["fixed", "yy_sy"])
@pytest.mark.parametrize("k", [3, 8])
def test_lsr1_psi_gram_is_psi_t_psi_and_round_trips_bit_exact(rule, k):
    # Kept current one row per update (and wholly when γ changes); the OBS solver factors it.
    mem, _ = _filled_lsr1(k=k, history=4, seed=3, gamma_rule=rule)
    _, rows, _, _ = mem.compact_rows()
    G = mem.psi_gram()
    assert rows is not None and G is not None
    torch.testing.assert_close(torch.from_numpy(G), rows @ rows.T, rtol=1e-12, atol=1e-12)
    other = LSR1Memory()
    other.load_state_dict(mem.state_dict())
    assert np.array_equal(other.psi_gram(), G)
    assert LSR1Memory().psi_gram() is None


def _psi_gram_error_float32(near_gamma: bool) -> float:
    """Largest entry error of ``psi_gram()`` for float32 pairs, relative to ``max ψᵢᵀψᵢ``,
    against the float64 Gram matrix of the stored float32 rows."""
    gen = torch.Generator().manual_seed(4)
    n, mem = 2000, LSR1Memory(history=4)  # γ fixed at 1
    for _ in range(4):
        s = torch.randn(n, generator=gen)
        noise = torch.randn(n, generator=gen)
        # y ≈ γs leaves ψ = y − γs a thousandth of y: ΨᵀΨ's expansion cancels 10⁶-fold.
        mem.update(s, s + 1e-3 * noise if near_gamma else 0.5 * s + noise)
    _, rows, _, _ = mem.compact_rows()
    G = mem.psi_gram()
    assert rows is not None and G is not None and rows.dtype == torch.float32
    ref = (rows.double() @ rows.double().T).numpy()
    return float(np.abs(G - ref).max() / np.diag(ref).max())


@pytest.mark.parametrize("near_gamma", [False, True])
def test_lsr1_psi_gram_is_accurate_in_float32_even_where_the_expansion_cancels(near_gamma):
    # Without the fallback to products with the rows, the cancelling case is off by 65% here.
    assert _psi_gram_error_float32(near_gamma) < 1e-5


def test_lsr1_loads_a_checkpoint_without_yy_gram():
    mem, _ = _filled_lsr1(k=6, history=4, seed=5, gamma_rule="yy_sy")
    d = mem.state_dict()
    del d["YY"]  # checkpoints written before the memory kept YᵀY
    other = LSR1Memory()
    other.load_state_dict(d)
    np.testing.assert_allclose(other.psi_gram(), mem.psi_gram(), rtol=1e-12, atol=1e-12)
    v = torch.randn(15, dtype=DT)
    torch.testing.assert_close(other.matvec(v), mem.matvec(v), rtol=1e-12, atol=1e-12)


def test_lbfgs_lazy_gram_matches_a_restored_memory_bitwise():
    # Gram entries are computed at the first matvec after updates; a memory restored from a
    # checkpoint (which holds the Gram matrices and the rows still pending) must give the same
    # bits.
    gen = torch.Generator().manual_seed(11)
    A = _spd(12, gen)
    mem = LBFGSMemory(history=4)
    v = torch.randn(12, generator=gen, dtype=DT)
    for i in range(9):
        s = torch.randn(12, generator=gen, dtype=DT)
        assert mem.update(s, A @ s)
        if i % 3 == 0:
            mem.matvec(v)  # some updates are folded in one at a time, others together
        other = LBFGSMemory()
        other.load_state_dict(mem.state_dict())
        assert torch.equal(other.matvec(v), mem.matvec(v))
    H = _dense(mem.apply_inverse, 12)  # the two-loop recursion never uses the Gram matrices
    torch.testing.assert_close(H @ mem.matvec(v), v, rtol=1e-9, atol=1e-9)


def test_lbfgs_span_operator_fuses_g_and_restores_bitwise():
    # span_operator computes [S; Y] g in the same product as the newest pair's Gram entries; a
    # memory restored mid-run makes the same products, and an old checkpoint without the Gram
    # matrices still loads (recomputing them).
    gen = torch.Generator().manual_seed(5)
    A = _spd(12, gen)
    mem = LBFGSMemory(history=4)
    for i in range(7):
        s = torch.randn(12, generator=gen, dtype=DT)
        assert mem.update(s, A @ s)
        g = torch.randn(12, generator=gen, dtype=DT)
        restored = LBFGSMemory()
        restored.load_state_dict(mem.state_dict())
        G, apply = mem.span_operator(g)
        G2, apply2 = restored.span_operator(g)
        z = np.arange(1.0, G.shape[0] + 1)
        assert np.array_equal(G, G2) and np.array_equal(apply(z), apply2(z))
        # First row of VᵀV: gᵀg, (Sᵀg)ᵀ, (Yᵀg)ᵀ, against plain products.
        S, Y = (torch.stack(p) for p in mem.pairs())
        ref = torch.cat([(g @ g).reshape(1), S @ g, Y @ g]).numpy()
        np.testing.assert_allclose(G[0], ref, rtol=1e-12, atol=1e-12)
        if i == 3:
            old = {k: v for k, v in mem.state_dict().items() if k != "gram"}
            legacy = LBFGSMemory()
            legacy.load_state_dict(old)
            buf = io.BytesIO()
            torch.save(mem.state_dict(), buf)
            buf.seek(0)
            via_file = LBFGSMemory()
            via_file.load_state_dict(torch.load(buf, weights_only=True))
            np.testing.assert_allclose(via_file.span_operator(g)[0], G, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(legacy.span_operator(g)[0], G, rtol=1e-12, atol=1e-12)
    bad = mem.state_dict()
    bad["gram"] = {**bad["gram"], "SS": torch.zeros(3, 3, dtype=DT)}
    with pytest.raises(ValueError, match="Gram matrices or pending rows"):
        LBFGSMemory().load_state_dict(bad)


def test_lbfgs_pairs_must_match_the_stored_ones_until_reset():
    mem, _ = _filled_lbfgs()
    with pytest.raises(ValueError, match="pair length 5 differs"):
        mem.update(torch.ones(5, dtype=DT), torch.ones(5, dtype=DT))
    with pytest.raises(ValueError, match=r"dtype torch\.float32"):
        mem.update(torch.ones(12), torch.ones(12))
    mem.reset()
    assert mem.update(torch.ones(5), 2.0 * torch.ones(5))  # an empty memory takes any length
    torch.testing.assert_close(mem.matvec(torch.ones(5)), 2.0 * torch.ones(5))


def test_lbfgs_switches_to_buffer_storage_at_the_first_product_and_round_trips_both():
    mem, _ = _filled_lbfgs(k=6, history=4, seed=2)
    v = torch.randn(12, dtype=DT)
    h_list = mem.apply_inverse(v)
    sd_list = mem.state_dict()
    assert sd_list["layout"] == "list"
    s_before, y_before = mem.pairs()
    Bv = mem.matvec(v)  # switches to the buffer
    assert mem.state_dict()["layout"] == "buffer"
    s_after, y_after = mem.pairs()
    assert all(torch.equal(a, b) for a, b in zip(s_before + y_before, s_after + y_after,
                                                 strict=True))
    torch.testing.assert_close(mem.apply_inverse(v), h_list, rtol=1e-13, atol=0)
    torch.testing.assert_close(mem.apply_inverse(Bv), v, rtol=1e-9, atol=1e-9)
    from_list, from_buffer = _loaded(sd_list), _loaded(mem.state_dict())
    assert from_list.state_dict()["layout"] == "list"
    assert from_buffer.state_dict()["layout"] == "buffer"
    assert torch.equal(from_list.apply_inverse(v), h_list)
    assert torch.equal(from_buffer.matvec(v), mem.matvec(v))
    with pytest.raises(ValueError, match="unknown L-BFGS memory layout"):
        LBFGSMemory().load_state_dict({**sd_list, "layout": "ring"})


def _loaded(sd):
    mem = LBFGSMemory()
    mem.load_state_dict(sd)
    return mem


@pytest.mark.parametrize("switch_after", [1, 3, 6])
def test_lbfgs_compact_inverse_in_buffer_storage_matches_the_two_loop(switch_after):
    # Buffer storage computes H g from the compact form; list storage by the two-loop
    # recursion. Same pairs (the ring buffer wrapped, Gram rows pending or not): same H g.
    n, gen = 15, torch.Generator().manual_seed(switch_after)
    A = _spd(n, gen)
    lst, buf = LBFGSMemory(history=4), LBFGSMemory(history=4)
    for i in range(9):
        s = torch.randn(n, generator=gen, dtype=DT)
        assert lst.update(s, A @ s) and buf.update(s, A @ s)
        if i == switch_after:
            buf.matvec(s)  # switches to buffer storage
        g = torch.randn(n, generator=gen, dtype=DT)
        if i >= switch_after:
            assert buf.state_dict()["layout"] == "buffer"
        torch.testing.assert_close(buf.apply_inverse(g), lst.apply_inverse(g), rtol=1e-11,
                                   atol=1e-12)
    s, y = buf.pairs()
    torch.testing.assert_close(buf.apply_inverse(y[-1]), s[-1], rtol=1e-10, atol=1e-10)
    H = _dense(buf.apply_inverse, n)
    torch.testing.assert_close(H @ _dense(buf.matvec, n), torch.eye(n, dtype=DT), rtol=0,
                               atol=1e-9)


@pytest.mark.parametrize("layout", ["list", "buffer"])
def test_lbfgs_negated_inverse_is_exactly_the_negation(layout):
    # The L-BFGS direction −H g is formed with the sign folded into the recursion (no extra
    # pass); negation is exact in IEEE arithmetic, so the bits must be those of −(H g).
    mem, _ = _filled_lbfgs(n=40, k=7, history=5, seed=3)
    if layout == "buffer":
        mem.matvec(torch.ones(40, dtype=DT))
    g = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=DT)
    assert mem.state_dict()["layout"] == layout
    assert torch.equal(mem.apply_inverse(g, negate=True), -mem.apply_inverse(g))
