"""Integer factorizations of matrix sizes for MPO decompositions, and zero padding.

An MPO of an ``(I, J)`` matrix needs ``I = i_1 * ... * i_n`` and ``J = j_1 * ... * j_n``.
Balanced factors keep the bond dimensions (and so the parameter count) even; a size with a
large prime factor (BERT's vocabulary 30522 = 2 * 3 * 5087) has no useful factorization and is
zero-padded first (MPOP pads 30522 -> 30720 and clips the padding rows after reconstruction).

Rules used here:

* ``factorize_dim(n, k)`` returns, among all ways of writing ``n`` as a product of ``k`` integers
  in ``[1, max_factor]``, the one whose factors are most even: smallest variance of
  ``log(factor)`` (equivalently the smallest ``sum log(f)^2``, as the sum of logs is fixed), ties
  broken by the smaller ``max/min`` ratio, then lexicographically. Factors are returned in
  ascending order; the order along the MPO chain is the caller's choice (``MPOP_SHAPES`` keeps
  the paper's orders, which put the larger factors near the centre).
* ``padded_factorization(n, k)`` returns the smallest ``padded_n >= n`` that (a) has only the
  prime factors 2, 3 and 5 (so the factors come from {2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16} and
  ``padded_n`` is a "round" size) and (b) splits into ``k`` factors ``<= max_factor`` with
  ``max/min <= max_ratio`` (default 2); then the most balanced such split. For 30522 this gives
  30720 = [6, 8, 8, 8, 10], the size MPOP pads to. (Dropping rule (a), 30618 = 2 * 3^7 * 7
  would be the first; we prefer the paper's size.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "MPOP_SHAPES",
    "MPOP_MATRIX_SHAPES",
    "factorize_dim",
    "padded_factorization",
    "pad_to",
    "unpad",
]

# Per-size factorizations of MPOP (digest 1.3: the code's shapes and the later mpo_lab
# ``DefaultMpoSet``), in the paper's order along the chain. Embedding rows of other sizes are
# zero-padded to the product and clipped after reconstruction.
MPOP_SHAPES: dict[int, list[int]] = {
    128: [2, 2, 4, 4, 2],
    256: [2, 4, 4, 4, 2],
    512: [2, 4, 8, 4, 2],
    768: [3, 4, 4, 4, 4],
    1024: [4, 4, 8, 4, 2],
    2048: [4, 4, 8, 4, 4],
    3072: [4, 4, 8, 6, 4],
    30000: [5, 10, 10, 10, 6],
}

# Whole-matrix factorizations of the MPOP ALBERT code, keyed by role: weight shape
# (rows, cols) = (out_features, in_features) of nn.Linear, or (vocab, hidden) for embeddings,
# and (row_dims, col_dims). Note the attention default does NOT use MPOP_SHAPES[768] for rows.
MPOP_MATRIX_SHAPES: dict[str, tuple[tuple[int, int], list[int], list[int]]] = {
    "albert_word_embeddings": ((30000, 128), [5, 10, 10, 10, 6], [2, 2, 4, 4, 2]),
    "ffn_in": ((3072, 768), [4, 4, 8, 6, 4], [3, 4, 4, 4, 4]),
    "ffn_out": ((768, 3072), [3, 4, 4, 4, 4], [4, 4, 8, 6, 4]),
    "attention": ((768, 768), [4, 4, 4, 4, 3], [4, 4, 4, 4, 3]),  # code default
    "attention_balanced": ((768, 768), [3, 4, 4, 4, 4], [4, 4, 4, 4, 3]),  # --balance_attention
}


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _splits(n: int, k: int, lo: int, hi: int) -> Iterator[tuple[int, ...]]:
    """All non-decreasing tuples of ``k`` ints in ``[lo, hi]`` whose product is ``n``."""
    if k == 1:
        if lo <= n <= hi:
            yield (n,)
        return
    f = lo
    while f <= hi and f ** k <= n:  # f is the smallest factor, so f^k <= n
        if n % f == 0:
            for rest in _splits(n // f, k - 1, f, hi):
                yield (f, *rest)
        f += 1


def _balance_key(factors: tuple[int, ...]) -> tuple[float, float, tuple[int, ...]]:
    logs = [math.log(f) for f in factors]
    return (round(sum(x * x for x in logs), 12), factors[-1] / factors[0], factors)


def _best_split(n: int, k: int, max_factor: int, max_ratio: float | None) -> tuple[int, ...] | None:
    candidates = [
        s for s in _splits(n, k, 1, max_factor) if max_ratio is None or s[-1] <= max_ratio * s[0]
    ]
    return min(candidates, key=_balance_key) if candidates else None


def factorize_dim(
    n: int, num_factors: int = 5, max_factor: int = 16, max_ratio: float | None = None
) -> list[int]:
    """Split ``n`` into ``num_factors`` balanced factors (ascending) whose product is exactly ``n``.

    Every factor is at most ``max_factor``; with ``max_ratio`` also ``max/min <= max_ratio``.
    Examples: 768 -> [3, 4, 4, 4, 4], 3072 -> [4, 4, 4, 6, 8], 384 -> [2, 3, 4, 4, 4].

    Raises:
        ValueError: if no such split exists (e.g. 30522 = 2 * 3 * 5087); use
            :func:`padded_factorization` and :func:`pad_to` then.
    """
    _check_int("n", n, 1)
    _check_int("num_factors", num_factors, 1)
    _check_int("max_factor", max_factor, 2)
    best = _best_split(n, num_factors, max_factor, max_ratio)
    if best is None:
        ratio = "" if max_ratio is None else f" with max/min <= {max_ratio}"
        hint = ""
        try:
            padded, factors = padded_factorization(n, num_factors, max_factor)
            hint = f"; pad it: padded_factorization gives {padded} = {factors}"
        except ValueError:
            pass
        raise ValueError(f"{n} has no factorization into {num_factors} factors <= {max_factor}{ratio}{hint}")
    return list(best)


def _is_235_smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def padded_factorization(
    n: int, num_factors: int = 5, max_factor: int = 16, max_ratio: float = 2.0
) -> tuple[int, list[int]]:
    """Smallest ``padded_n >= n`` with a balanced split, and that split (ascending).

    Rule: ``padded_n`` has prime factors only in {2, 3, 5} and splits into ``num_factors``
    factors ``<= max_factor`` with ``max/min <= max_ratio``; 30522 -> (30720, [6, 8, 8, 8, 10]).
    ``n`` itself is returned when it already qualifies.
    """
    _check_int("n", n, 1)
    _check_int("num_factors", num_factors, 1)
    _check_int("max_factor", max_factor, 2)
    if not max_ratio >= 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio!r}")
    limit = max_factor**num_factors
    for m in range(n, limit + 1):
        if _is_235_smooth(m):
            best = _best_split(m, num_factors, max_factor, max_ratio)
            if best is not None:
                return m, list(best)
    raise ValueError(
        f"no size in [{n}, {limit}] splits into {num_factors} factors <= {max_factor} "
        f"with max/min <= {max_ratio}"
    )


def pad_to(W: Tensor, rows: int, cols: int) -> Tensor:
    """Zero-pad ``W`` ``(r, c)`` at the bottom/right to ``(rows, cols)`` (``rows >= r``, ``cols >= c``)."""
    if W.ndim != 2:
        raise ValueError(f"pad_to expects a 2-D tensor, got shape {tuple(W.shape)}")
    r, c = W.shape
    if rows < r or cols < c:
        raise ValueError(f"cannot pad shape {(r, c)} to the smaller shape {(rows, cols)}")
    if (rows, cols) == (r, c):
        return W
    return torch.nn.functional.pad(W, (0, cols - c, 0, rows - r))


def unpad(W: Tensor, rows: int, cols: int) -> Tensor:
    """Clip ``W`` to its top-left ``(rows, cols)`` block (the inverse of :func:`pad_to`)."""
    if W.ndim != 2:
        raise ValueError(f"unpad expects a 2-D tensor, got shape {tuple(W.shape)}")
    if rows > W.shape[0] or cols > W.shape[1]:
        raise ValueError(f"cannot clip shape {tuple(W.shape)} to the larger shape {(rows, cols)}")
    return W[:rows, :cols]
