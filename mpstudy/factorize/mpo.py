"""Matrix product operator (MPO) decomposition of a weight matrix, as used by MPOP.

A matrix ``W`` of shape ``(I, J)`` with ``I = i_1 * ... * i_n`` and ``J = j_1 * ... * j_n`` is
written as a chain of ``n`` cores ``T_k`` of shape ``(d_{k-1}, i_k, j_k, d_k)`` with
``d_0 = d_n = 1``::

    W[(a_1..a_n), (b_1..b_n)] = sum_{bonds} T_1[1, a_1, b_1, :] T_2[:, a_2, b_2, :] ... T_n[:, a_n, b_n, 1]

Algorithm (methods digest, section 1.2):

1. reshape ``W`` to ``(i_1..i_n, j_1..j_n)`` and interleave to ``(i_1, j_1, ..., i_n, j_n)``;
2. exact TT-SVD (every bond untruncated) into mixed-canonical form around the *central* core
   ``(n - 1) // 2``: left to right up to it, right to left down to it;
3. truncation = slicing every bond to its first ``d'`` indices.

Why the canonical form matters: after step 2 the cores left of the centre are
left-orthonormal and those right of it right-orthonormal, and every bond index runs over the
singular vectors of the matching unfolding of ``W`` in decreasing order of singular value. Keeping
the first ``d'`` indices of bond ``k`` is then the orthogonal projection of ``W`` onto its best
rank-``d'`` approximation across that cut (Eckart-Young), and cutting several bonds at once is a
product of such projections ``P_1 ... P_{n-1} W``. For orthogonal projectors,
``W - P_1 Q W = (I - P_1) W + P_1 (W - Q W)`` is a sum of two orthogonal terms, so by induction
``||W - P_1 ... P_{n-1} W||_F^2 <= sum_k ||(I - P_k) W||_F^2 = sum_k eps_k^2``: the TT-SVD error
bound (MPOP appendix, Theorem 1) holds with ``eps_k`` read straight off the stored singular values,
for any caps, without recomputing anything. This is what makes "squeeze a bond, read the error
from the spectrum" cheap.

Note: TensorLy's ``tensor_train_matrix`` truncates *sequentially* (each SVD sees the already
truncated remainder). Cutting one bond gives the same result as here; cutting several bonds gives
a slightly different (equally bounded) approximation.

Everything here is plain torch: no ``nn.Module``, no Hugging Face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "MPO",
    "mpo_decompose",
    "mpo_to_dense",
    "mpo_bond_dims",
    "mpo_num_params",
]

# A bond cap: one int for every internal bond, or one int per internal bond (n - 1 of them).
BondCap = int | Sequence[int] | None


# ----------------------------------------------------------------------------------------------
# argument checks (errors name the bad value and what is allowed)
# ----------------------------------------------------------------------------------------------


def _check_dims(
    row_dims: Sequence[int], col_dims: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate the factorizations of the row and column sizes; return them as int tuples."""
    rows, cols = tuple(row_dims), tuple(col_dims)
    for name, dims in (("row_dims", rows), ("col_dims", cols)):
        if len(dims) == 0:
            raise ValueError(f"{name} must hold at least one factor, got {dims!r}")
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, Integral) or d < 1:
                raise ValueError(f"{name} must be positive ints, got {dims!r} (bad entry {d!r})")
    rows, cols = tuple(int(d) for d in rows), tuple(int(d) for d in cols)
    if len(rows) != len(cols):
        raise ValueError(
            f"row_dims {rows} and col_dims {cols} must have the same length, got {len(rows)} and {len(cols)}"
        )
    return rows, cols


def _check_max_bond(max_bond: BondCap, num_bonds: int) -> list[int] | None:
    """Normalize a bond cap to one positive int per internal bond (or None = no cap)."""
    if max_bond is None:
        return None
    if isinstance(max_bond, Sequence) and not isinstance(max_bond, str):
        caps = list(max_bond)
        if len(caps) != num_bonds:
            raise ValueError(
                f"max_bond as a sequence needs one cap per internal bond ({num_bonds}), got {caps!r}"
            )
    else:
        caps = [max_bond] * num_bonds  # type: ignore[list-item]
    for cap in caps:
        if isinstance(cap, bool) or not isinstance(cap, Integral) or cap < 1:
            raise ValueError(f"max_bond must be an int >= 1 (or one per bond), got {max_bond!r}")
    return [int(cap) for cap in caps]


def _check_rel_tol(rel_tol: float | None) -> float | None:
    if rel_tol is None:
        return None
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, (int, float)) or not 0.0 <= rel_tol < 1.0:
        raise ValueError(f"rel_tol must be a float in [0, 1), got {rel_tol!r}")
    return float(rel_tol)


# ----------------------------------------------------------------------------------------------
# shapes alone
# ----------------------------------------------------------------------------------------------


def mpo_bond_dims(row_dims: Sequence[int], col_dims: Sequence[int], max_bond: BondCap = None) -> list[int]:
    """Bond dimensions ``[d_0, ..., d_n]`` (``d_0 = d_n = 1``) of an MPO of these shapes.

    Untruncated ``d_k = min(prod_{m<=k} i_m j_m, prod_{m>k} i_m j_m)`` (the rank bound of the
    unfolding at bond ``k``); a cap gives ``min(cap_k, d_k)``.
    """
    rows, cols = _check_dims(row_dims, col_dims)
    n = len(rows)
    caps = _check_max_bond(max_bond, n - 1)
    modes = [i * j for i, j in zip(rows, cols)]
    total = math.prod(modes)
    dims = [1]
    left = 1
    for k in range(n - 1):
        left *= modes[k]
        d = min(left, total // left)
        dims.append(d if caps is None else min(d, caps[k]))
    dims.append(1)
    return dims


def _num_params(bond_dims: Sequence[int], row_dims: Sequence[int], col_dims: Sequence[int]) -> int:
    return sum(bond_dims[k] * i * j * bond_dims[k + 1] for k, (i, j) in enumerate(zip(row_dims, col_dims)))


def mpo_num_params(row_dims: Sequence[int], col_dims: Sequence[int], max_bond: BondCap = None) -> int:
    """Number of stored MPO parameters ``sum_k d_{k-1} i_k j_k d_k`` from the shapes alone.

    Example (methods digest 1.3): FFN 3072x768 with rows [4,4,8,6,4], cols [3,4,4,4,4] has
    bonds [1,12,192,384,16,1] and 2,544,016 parameters untruncated, 1,603,984 at cap 240.
    """
    return _num_params(mpo_bond_dims(row_dims, col_dims, max_bond), row_dims, col_dims)


# ----------------------------------------------------------------------------------------------
# dense <-> cores
# ----------------------------------------------------------------------------------------------


def _interleave(W: Tensor, rows: tuple[int, ...], cols: tuple[int, ...]) -> Tensor:
    """``(I, J)`` -> ``(i_1, j_1, ..., i_n, j_n)``."""
    n = len(rows)
    order = [p for k in range(n) for p in (k, n + k)]
    return W.reshape(*rows, *cols).permute(*order)


def mpo_to_dense(cores: Sequence[Tensor], row_dims: Sequence[int], col_dims: Sequence[int]) -> Tensor:
    """Contract cores ``(d_{k-1}, i_k, j_k, d_k)`` back to the ``(I, J)`` matrix.

    Plain differentiable torch ops, so layers can call it on ``nn.Parameter`` cores.
    """
    rows, cols = tuple(row_dims), tuple(col_dims)
    n = len(cores)
    out = cores[0].reshape(-1, cores[0].shape[-1])  # (i_1 j_1, d_1)
    for core in cores[1:]:
        # (prefix, d_{k-1}) @ (d_{k-1}, i_k j_k d_k) -> (prefix * i_k j_k, d_k)
        out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    # out is (i_1 j_1 ... i_n j_n, 1) in interleaved order; undo the interleaving.
    out = out.reshape([p for k in range(n) for p in (rows[k], cols[k])])
    out = out.permute(*range(0, 2 * n, 2), *range(1, 2 * n, 2))
    return out.reshape(math.prod(rows), math.prod(cols))


def _split_rows(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``M = U @ C`` with ``U`` ``(m, r)`` orthonormal, singular values ``S`` (descending) and ``C = diag(S) V^T``.

    For a wide ``M`` (``m <= n``) this is the eigendecomposition of the small Gram matrix
    ``M M^T`` in float64, then ``C = U^T M``: two matrix products and an ``m x m`` ``eigh``, several
    times faster than a full SVD, and ``U`` is square so ``U @ C == M`` exactly. Nothing is divided
    by a singular value, so zero ones (padded rows) are harmless. Tall ``M``: a plain SVD.
    """
    m, n = M.shape
    if m > n:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return U, S, S[:, None] * Vh
    M64 = M.double()
    evals, U = torch.linalg.eigh(M64 @ M64.T)
    U = U.flip(1)
    S = evals.flip(0).clamp_min(0).sqrt()
    return U.to(M.dtype), S, (U.T @ M64).to(M.dtype)  # S stays float64: the bond spectra are kept in float64


def _split_cols(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``M = C @ Vh`` with ``Vh`` ``(r, n)`` orthonormal rows, singular values ``S`` and ``C = U diag(S)``.

    The mirror of :func:`_split_rows`: for a tall ``M`` the Gram matrix is ``M^T M``.
    """
    if M.shape[0] < M.shape[1]:
        U, S, Vh = torch.linalg.svd(M, full_matrices=False)
        return U * S, S, Vh
    U, S, C = _split_rows(M.T)
    return C.T, S, U.T


def _tt_svd_mixed(T: Tensor, rows: tuple[int, ...], cols: tuple[int, ...], center: int) -> tuple[list[Tensor], list[Tensor]]:
    """Exact (untruncated) TT-SVD of the interleaved tensor ``T`` straight into mixed-canonical form.

    Sweeps left to right up to ``center`` (cores ``< center`` left-orthonormal), then right to left
    down to it (cores ``> center`` right-orthonormal) on what is left; ``center`` keeps the rest.
    Each split unfolds ``W`` at one bond with an isometry on the other side, so its singular values
    are exactly those of ``W`` at that bond. That is ``n - 1`` splits, as many SVDs as a one-way
    TT-SVD; the unfoldings met this way are wide on the left and tall on the right, which is where
    the Gram-matrix split (:func:`_split_rows`) is exact and fast.

    Returns cores ``(d_{k-1}, i_k, j_k, d_k)`` and, per internal bond, its singular values (descending).
    """
    n = len(rows)
    cores: list[Tensor] = [T.new_empty(0)] * n
    svals: list[Tensor] = [T.new_empty(0)] * (n - 1)
    rest = T.reshape(1, -1)
    d_left = 1
    for k in range(center):  # left to right: U becomes core k, diag(S) V^T moves right
        U, S, rest = _split_rows(rest.reshape(d_left * rows[k] * cols[k], -1))
        cores[k] = U.reshape(d_left, rows[k], cols[k], S.shape[0])
        svals[k], d_left = S, S.shape[0]
    d_right = 1
    for k in range(n - 1, center, -1):  # right to left: V^T becomes core k, U diag(S) moves left
        rest, S, Vh = _split_cols(rest.reshape(-1, rows[k] * cols[k] * d_right))
        cores[k] = Vh.reshape(S.shape[0], rows[k], cols[k], d_right)
        svals[k - 1], d_right = S, S.shape[0]
    cores[center] = rest.reshape(d_left, rows[center], cols[center], d_right)
    return cores, svals


# ----------------------------------------------------------------------------------------------
# the MPO object
# ----------------------------------------------------------------------------------------------


def _tail_norms(s: Tensor) -> Tensor:
    """``t[d] = ||s[d:]||_2`` for ``d = 0..len(s)`` (``t[len(s)] = 0``)."""
    sq = torch.flip(torch.cumsum(torch.flip(s.double() ** 2, [0]), 0), [0])
    return torch.sqrt(torch.cat([sq, sq.new_zeros(1)]))


@dataclass(repr=False)
class MPO:
    """An MPO in mixed-canonical form around ``central_index``.

    Attributes:
        cores: ``n`` tensors shaped ``(d_{k-1}, i_k, j_k, d_k)``.
        row_dims, col_dims: ``(i_1..i_n)`` and ``(j_1..j_n)``; ``W`` is ``(prod i, prod j)``.
        bond_singular_values: ``n - 1`` float64 vectors, the full (untruncated) singular values of
            ``W`` across each internal bond, descending. Slicing bond ``k`` to ``d'`` keeps
            ``bond_singular_values[k-1][:d']`` (1-based bond ``k`` sits between cores ``k-1, k``).
        discarded: per internal bond, the 2-norm of the singular values cut away so far.
        frobenius_norm: ``||W||_F`` of the decomposed matrix.
    """

    cores: list[Tensor]
    row_dims: tuple[int, ...]
    col_dims: tuple[int, ...]
    bond_singular_values: list[Tensor]
    discarded: list[float] = field(default_factory=list)
    frobenius_norm: float = 0.0

    def __post_init__(self) -> None:
        self.row_dims, self.col_dims = _check_dims(self.row_dims, self.col_dims)
        if not self.discarded:
            self.discarded = [0.0] * (len(self.cores) - 1)

    # --- shapes and counts ------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of cores."""
        return len(self.cores)

    @property
    def shape(self) -> tuple[int, int]:
        """``(I, J)`` of the dense matrix."""
        return math.prod(self.row_dims), math.prod(self.col_dims)

    @property
    def central_index(self) -> int:
        """Index of the central tensor, ``(n - 1) // 2`` (MPOP's ``CT_index``)."""
        return (self.n - 1) // 2

    @property
    def auxiliary_indices(self) -> list[int]:
        """Indices of the auxiliary (non-central) tensors."""
        return [k for k in range(self.n) if k != self.central_index]

    @property
    def bond_dims(self) -> list[int]:
        """``[d_0, ..., d_n]``, including the two trivial ends ``d_0 = d_n = 1``."""
        return [self.cores[0].shape[0]] + [c.shape[-1] for c in self.cores]

    @property
    def num_params(self) -> int:
        """Stored parameters, ``sum_k d_{k-1} i_k j_k d_k``."""
        return int(sum(c.numel() for c in self.cores))

    @property
    def dense_num_params(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def compression_ratio(self) -> float:
        """MPOP's ``rho = num_params / (I J)`` (> 1 means bigger than dense)."""
        return self.num_params / self.dense_num_params

    # --- reconstruction and error -----------------------------------------------------------
    def to_dense(self) -> Tensor:
        """The ``(I, J)`` matrix the cores represent (dtype and device of the cores)."""
        return mpo_to_dense(self.cores, self.row_dims, self.col_dims)

    def error_bound(self) -> float:
        """``sqrt(sum_k eps_k^2)`` >= ``||W - self.to_dense()||_F`` (eps_k = ``discarded[k]``)."""
        return math.sqrt(sum(e * e for e in self.discarded))

    def relative_error_bound(self) -> float:
        """``error_bound() / ||W||_F`` (0 for a zero matrix)."""
        return self.error_bound() / self.frobenius_norm if self.frobenius_norm > 0 else 0.0

    def bond_cut_error(self, bond: int, dim: int) -> float:
        """Exact error ``||W - W'||_F`` of cutting only internal bond ``bond`` (1..n-1) to ``dim``."""
        s = self.bond_singular_values[bond - 1]
        return float(_tail_norms(s)[min(dim, s.shape[0])])

    # --- truncation --------------------------------------------------------------------------
    def truncate(self, max_bond: BondCap = None, rel_tol: float | None = None) -> MPO:
        """A new MPO with bonds cut to ``d'_k = min(cap_k, d_tol_k, current d_k)``.

        ``max_bond``: one int for every internal bond or a sequence of ``n - 1`` ints.
        ``rel_tol``: per bond, keep the fewest singular values whose discarded tail is at most
        ``rel_tol * ||W||_F / sqrt(n - 1)``, so the total bound is ``<= rel_tol * ||W||_F``
        (a cap can only cut further, and then the bound is whatever ``error_bound()`` says).
        Slicing is valid for any caps thanks to the canonical form (see module docstring); the
        errors stay relative to the original ``W`` even when truncating an already truncated MPO.
        """
        caps = _check_max_bond(max_bond, self.n - 1)
        tol = _check_rel_tol(rel_tol)
        dims = self._choose_bond_dims(caps, tol)
        cores = [
            c[: dims[k], :, :, : dims[k + 1]].clone() for k, c in enumerate(self.cores)
        ]
        discarded = [
            float(_tail_norms(s)[dims[k + 1]]) for k, s in enumerate(self.bond_singular_values)
        ]
        return MPO(
            cores=cores,
            row_dims=self.row_dims,
            col_dims=self.col_dims,
            bond_singular_values=self.bond_singular_values,
            discarded=discarded,
            frobenius_norm=self.frobenius_norm,
        )

    def _choose_bond_dims(self, caps: list[int] | None, tol: float | None) -> list[int]:
        dims = self.bond_dims
        new = [1]
        per_bond = None
        if tol is not None and self.n > 1:
            per_bond = tol * self.frobenius_norm / math.sqrt(self.n - 1)
        for k, s in enumerate(self.bond_singular_values):
            d = dims[k + 1]
            if caps is not None:
                d = min(d, caps[k])
            if per_bond is not None:
                tails = _tail_norms(s)
                ok = torch.nonzero(tails[1:] <= per_bond).flatten()  # candidate dims 1..len(s)
                d = min(d, int(ok[0]) + 1 if ok.numel() else s.shape[0])
            new.append(max(d, 1))
        new.append(1)
        return new

    def __repr__(self) -> str:
        return (
            f"MPO(shape={self.shape}, row_dims={list(self.row_dims)}, col_dims={list(self.col_dims)}, "
            f"bond_dims={self.bond_dims}, num_params={self.num_params}, "
            f"central_index={self.central_index}, error_bound={self.error_bound():.4g})"
        )


def mpo_decompose(
    W: Tensor,
    row_dims: Sequence[int],
    col_dims: Sequence[int],
    max_bond: BondCap = None,
    rel_tol: float | None = None,
) -> MPO:
    """MPO of ``W`` ``(I, J)``, with cores ``(d_{k-1}, i_k, j_k, d_k)`` in mixed-canonical form.

    Args:
        W: 2-D floating tensor, ``I == prod(row_dims)`` and ``J == prod(col_dims)``.
        row_dims, col_dims: factorizations of ``I`` and ``J``, same length ``n``.
        max_bond: optional cap on every internal bond (int), or one cap per bond (``n - 1`` ints).
        rel_tol: optional relative Frobenius tolerance in ``[0, 1)``; see :meth:`MPO.truncate`.

    Each bond is split through the eigendecomposition of the unfolding's small Gram matrix, formed
    in float64 (SVD where an unfolding is not wide/tall as expected), on ``W``'s device: about twice
    as fast as TensorLy's ``tensor_train_matrix`` on the same matrix (``bench/mpo_bench.py``). The
    cores come back in ``W``'s dtype and the bond spectra in float64. The result
    keeps the full bond spectra, so ``.truncate(...)`` later is a slice, not a recomputation.
    """
    if not isinstance(W, Tensor) or W.ndim != 2:
        shape = tuple(getattr(W, "shape", ()))
        raise ValueError(f"W must be a 2-D torch tensor, got {type(W).__name__} of shape {shape}")
    if not W.is_floating_point():
        raise ValueError(f"W must be a floating-point tensor, got dtype {W.dtype}")
    rows, cols = _check_dims(row_dims, col_dims)
    I, J = W.shape
    if (I, J) != (math.prod(rows), math.prod(cols)):
        raise ValueError(
            f"W has shape {tuple(W.shape)} but row_dims {list(rows)} multiply to {math.prod(rows)} "
            f"and col_dims {list(cols)} to {math.prod(cols)}"
        )
    caps = _check_max_bond(max_bond, len(rows) - 1)
    tol = _check_rel_tol(rel_tol)
    work_dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    W64 = W.detach().to(work_dtype)
    if not torch.isfinite(W64).all():
        raise ValueError("W contains NaN or inf values")

    center = (len(rows) - 1) // 2
    cores, svals = _tt_svd_mixed(_interleave(W64, rows, cols), rows, cols, center)
    svals = [s.to(torch.float64) for s in svals]

    full = MPO(
        cores=[c.to(W.dtype) for c in cores],
        row_dims=rows,
        col_dims=cols,
        bond_singular_values=svals,
        frobenius_norm=float(torch.linalg.vector_norm(W64)),
    )
    if caps is None and tol is None:
        return full
    return full.truncate(caps, tol)
