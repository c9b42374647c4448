"""A general continuous-time Markov chain steady-state solver (numpy), for cross-checks.

The closed forms in :mod:`fivenines.model.pool` are what ``fivenines model`` uses;
this module solves ``pi Q = 0, sum(pi) = 1`` for any finite irreducible generator
``Q`` so that tests can check every closed form against the chain it claims to
solve. Two methods:

* ``"gth"`` (default): the Grassmann-Taksar-Heyman elimination. It never subtracts,
  so even probabilities of 1e-30 come out with full relative precision, which the
  nines of a redundant layout need.
* ``"solve"``: the textbook linear system, one balance equation replaced by the
  normalisation. Accurate only in absolute terms (about 1e-16).

Chains are written as transitions ``{(from, to): rate}`` over hashable state names;
:func:`generator` turns them into ``Q``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
S = TypeVar("S", bound=Hashable)


def generator(states: Sequence[S], rates: Mapping[tuple[S, S], float]) -> FloatArray:
    """The generator matrix ``Q`` of a chain given as ``{(from, to): rate}``.

    Off-diagonal ``Q[i, j]`` is the rate from ``states[i]`` to ``states[j]``; each
    diagonal makes its row sum to zero.

    >>> generator(["up", "down"], {("up", "down"): 0.1, ("down", "up"): 2.0}).tolist()
    [[-0.1, 0.1], [2.0, -2.0]]
    """
    index = {s: i for i, s in enumerate(states)}
    if len(index) != len(states):
        raise ValueError("states must be distinct")
    q = np.zeros((len(states), len(states)), dtype=np.float64)
    for (a, b), rate in rates.items():
        if a == b:
            raise ValueError(f"self-transition {a!r} -> {b!r}")
        if a not in index or b not in index:
            raise ValueError(f"transition {a!r} -> {b!r} names an unknown state")
        if not rate >= 0:
            raise ValueError(f"rate {a!r} -> {b!r} must be >= 0, got {rate!r}")
        q[index[a], index[b]] += rate
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def steady_state(q: npt.ArrayLike, method: Literal["gth", "solve"] = "gth") -> FloatArray:
    """Stationary distribution ``pi`` with ``pi Q = 0`` and ``sum(pi) = 1``.

    ``Q`` must be the generator of an irreducible chain (every state reachable from
    every other); :class:`ValueError` otherwise.

    >>> q = generator([0, 1], {(0, 1): 1.0, (1, 0): 3.0})
    >>> steady_state(q).tolist(), steady_state(q, "solve").tolist()
    ([0.75, 0.25], [0.75, 0.25])
    """
    mat = np.array(q, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise ValueError(f"Q must be a non-empty square matrix, got shape {mat.shape}")
    off = mat - np.diag(np.diag(mat))
    if (off < 0).any():
        raise ValueError("off-diagonal rates of Q must be >= 0")
    if not is_irreducible(off):
        raise ValueError("the chain is not irreducible: some state cannot reach another")
    if method == "gth":
        return _gth(off)
    if method == "solve":
        return _solve(off)
    raise ValueError(f"unknown method {method!r}; use 'gth' or 'solve'")


def _gth(off: FloatArray) -> FloatArray:
    n = off.shape[0]
    p = off.copy()
    for k in range(n - 1, 0, -1):
        # censor state k out: redistribute its outflow over the states below it
        p[:k, k] /= p[k, :k].sum()
        p[:k, :k] += np.outer(p[:k, k], p[k, :k])
    pi = np.zeros(n, dtype=np.float64)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ p[:k, k]
    return np.asarray(pi / pi.sum(), dtype=np.float64)


def is_irreducible(off: npt.ArrayLike) -> bool:
    """True when every state can reach every other through positive rates.

    >>> is_irreducible([[0, 1], [1, 0]]), is_irreducible([[0, 1], [0, 0]])
    (True, False)
    """
    adj = np.asarray(off, dtype=np.float64) > 0
    np.fill_diagonal(adj, False)
    return _reaches_all(adj) and _reaches_all(adj.T)


def _reaches_all(adj: npt.NDArray[np.bool_]) -> bool:
    seen = np.zeros(adj.shape[0], dtype=bool)
    seen[0] = True
    frontier = seen.copy()
    while frontier.any():
        nxt = adj[frontier].any(axis=0) & ~seen
        seen |= nxt
        frontier = nxt
    return bool(seen.all())


def _solve(off: FloatArray) -> FloatArray:
    n = off.shape[0]
    q = off - np.diag(off.sum(axis=1))
    a = q.T.copy()
    a[-1, :] = 1.0
    b = np.zeros(n, dtype=np.float64)
    b[-1] = 1.0
    return np.asarray(np.linalg.solve(a, b), dtype=np.float64)


def stationary(
    states: Sequence[S],
    rates: Mapping[tuple[S, S], float],
    method: Literal["gth", "solve"] = "gth",
) -> dict[S, float]:
    """``{state: probability}`` of a chain given as transitions.

    >>> stationary(["up", "down"], {("up", "down"): 1.0, ("down", "up"): 3.0})
    {'up': 0.75, 'down': 0.25}
    """
    pi = steady_state(generator(states, rates), method)
    return {s: float(p) for s, p in zip(states, pi, strict=True)}
