"""The general CTMC solver: generator construction, GTH against the linear solve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.model import markov

DETERMINISTIC = settings(derandomize=True, max_examples=150, deadline=None, database=None)


def test_generator_rows_sum_to_zero() -> None:
    q = markov.generator(["a", "b", "c"], {("a", "b"): 1.0, ("b", "c"): 2.0, ("c", "a"): 3.0, ("b", "a"): 0.5})
    assert q.tolist() == [[-1.0, 1.0, 0.0], [0.5, -2.5, 2.0], [3.0, 0.0, -3.0]]
    assert np.allclose(q.sum(axis=1), 0.0)


@pytest.mark.parametrize(
    ("states", "rates", "message"),
    [
        (["a", "a"], {}, "distinct"),
        (["a"], {("a", "a"): 1.0}, "self-transition"),
        (["a"], {("a", "b"): 1.0}, "unknown state"),
        (["a", "b"], {("a", "b"): -1.0}, "must be >= 0"),
    ],
)
def test_generator_rejects_bad_chains(states: list[str], rates: dict[tuple[str, str], float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        markov.generator(states, rates)


def test_two_state_chain_is_mu_over_lambda_plus_mu() -> None:
    lam, mu = 0.01, 0.2
    pi = markov.stationary(["up", "down"], {("up", "down"): lam, ("down", "up"): mu})
    assert pi["up"] == pytest.approx(mu / (lam + mu), rel=1e-14)
    assert pi["down"] == pytest.approx(lam / (lam + mu), rel=1e-14)


def test_three_state_cycle_spends_time_inverse_to_exit_rate() -> None:
    # a -> b -> c -> a: the time share of each state is proportional to its mean holding time
    rates = {("a", "b"): 1.0, ("b", "c"): 2.0, ("c", "a"): 4.0}
    pi = markov.stationary(["a", "b", "c"], rates)
    total = 1 + 1 / 2 + 1 / 4
    assert [pi[s] for s in "abc"] == pytest.approx([1 / total, 0.5 / total, 0.25 / total], rel=1e-14)


def test_reducible_chains_are_refused() -> None:
    absorbing = markov.generator([0, 1], {(0, 1): 1.0})
    for method in ("gth", "solve"):
        with pytest.raises(ValueError, match="not irreducible"):
            markov.steady_state(absorbing, method)
    assert not markov.is_irreducible([[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_bad_matrices_and_methods_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        markov.steady_state(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="off-diagonal"):
        markov.steady_state([[0.0, -1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="unknown method"):
        markov.steady_state([[-1.0, 1.0], [1.0, -1.0]], "lu")  # type: ignore[arg-type]


def test_single_state_chain() -> None:
    assert markov.steady_state([[0.0]]).tolist() == [1.0]


def test_gth_keeps_relative_precision_where_the_linear_solve_cannot() -> None:
    # a birth-death chain whose last state has probability about 1e-40
    n, lam, mu = 6, 1e-8, 1.0
    rates = {}
    for j in range(n - 1):
        rates[(j, j + 1)] = lam
        rates[(j + 1, j)] = mu
    pi = markov.steady_state(markov.generator(list(range(n)), rates))
    exact_last = (lam / mu) ** (n - 1) / sum((lam / mu) ** j for j in range(n))
    assert pi[-1] == pytest.approx(exact_last, rel=1e-12)
    assert exact_last < 1e-39


@st.composite
def irreducible_generators(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 7))
    rate = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
    off = np.zeros((n, n))
    # a cycle through every state keeps the chain irreducible; the rest is random
    for i in range(n):
        if n > 1:
            off[i, (i + 1) % n] = draw(rate)
    for i in range(n):
        for j in range(n):
            if i != j and draw(st.booleans()):
                off[i, j] += draw(rate)
    return off - np.diag(off.sum(axis=1))


@DETERMINISTIC
@given(irreducible_generators())
def test_gth_and_linear_solve_agree_and_balance(q: np.ndarray) -> None:
    gth = markov.steady_state(q, "gth")
    solved = markov.steady_state(q, "solve")
    assert gth.sum() == pytest.approx(1.0, rel=1e-12)
    assert (gth > 0).all()
    assert np.allclose(gth, solved, rtol=1e-8, atol=1e-12)
    # pi Q = 0, relative to the size of the flows
    assert np.allclose(gth @ q, 0.0, atol=1e-9 * np.abs(q).max())
