"""MPO layers (MPOP, Liu et al. 2021): a weight held as a chain of small tensors.

A weight ``W`` (``rows x cols``, zero-padded to ``prod(row_dims) x prod(col_dims)`` when a size
does not factor well, e.g. a 30,522-token vocabulary) is stored as ``n`` cores shaped
``(d_{k-1}, i_k, j_k, d_k)`` (see ``mpstudy.factorize.mpo``). The middle core is the *central
tensor* and holds most of the parameters; the others are *auxiliary tensors*. In lightweight
fine-tuning the central tensor is frozen and only the auxiliary tensors (plus everything outside
the MPO layers) train: ``adapter_params()`` lists exactly what trains, and
``set_lightweight(model)`` applies it to a whole model.

Cost: in training the dense weight is contracted from the cores on every forward (MPO saves
storage, not time). In evaluation mode the contracted weight is cached, so inference runs at the
dense model's speed; the cache is dropped whenever the layer returns to training, is moved, or
loads a state dict (changing the cores in place while in evaluation mode is not detected).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..factorize.mpo import MPO, mpo_decompose, mpo_to_dense
from ..factorize.shapes import factorize_dim, pad_to, padded_factorization
from .base import CompressedLayer, register_layer

__all__ = ["MPOLinear", "MPOEmbedding", "MPOLayerMixin", "mpo_shapes", "mpo_layers"]


def mpo_shapes(rows: int, cols: int, num_cores: int = 5) -> tuple[list[int], list[int]]:
    """Default factorizations of a ``rows x cols`` weight: ``(row_dims, col_dims)``.

    Rows are split into ``num_cores`` balanced factors in ascending order and columns in
    descending order, which balances the two bonds around the central tensor (the digest's
    advice; the original's default attention shape left them at 256 and 144). Sizes without a
    balanced factorization (vocabularies) are padded to the nearest size that has one.
    """
    def split(n: int) -> list[int]:
        try:
            return sorted(factorize_dim(n, num_cores))
        except ValueError:
            return sorted(padded_factorization(n, num_cores)[1])

    return split(rows), sorted(split(cols), reverse=True)


class MPOLayerMixin(CompressedLayer):
    """What ``MPOLinear`` and ``MPOEmbedding`` share: cores, counts, cache, lightweight protocol."""

    rows: int
    cols: int

    def _init_cores(self, row_dims: Sequence[int], col_dims: Sequence[int], bond_dims: Sequence[int]) -> None:
        if len(row_dims) != len(col_dims) or len(bond_dims) != len(row_dims) + 1:
            raise ValueError(f"need n row dims, n col dims and n+1 bond dims, got {row_dims}, {col_dims}, {bond_dims}")
        if math.prod(row_dims) < self.rows or math.prod(col_dims) < self.cols:
            raise ValueError(f"dims {list(row_dims)} x {list(col_dims)} do not cover the {self.rows} x {self.cols} weight")
        self.row_dims, self.col_dims = [int(d) for d in row_dims], [int(d) for d in col_dims]
        self.cores = nn.ParameterList(
            nn.Parameter(torch.zeros(bond_dims[k], i, j, bond_dims[k + 1])) for k, (i, j) in enumerate(zip(row_dims, col_dims))
        )
        self.central_index = (len(row_dims) - 1) // 2
        self._cache: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._drop_cache())

    # --- structure ----------------------------------------------------------------------------
    @property
    def bond_dims(self) -> list[int]:
        """``[1, d_1, ..., d_{n-1}, 1]``."""
        return [1] + [int(c.shape[-1]) for c in self.cores]

    def central_tensor(self) -> nn.Parameter:
        return self.cores[self.central_index]

    def auxiliary_tensors(self) -> list[nn.Parameter]:
        return [c for k, c in enumerate(self.cores) if k != self.central_index]

    def adapter_params(self) -> Iterator[nn.Parameter]:
        """Lightweight fine-tuning trains the auxiliary tensors and the bias, never the central tensor."""
        yield from self.auxiliary_tensors()
        if getattr(self, "bias", None) is not None:
            yield self.bias

    # --- dense weight ---------------------------------------------------------------------------
    def padded_dense(self) -> torch.Tensor:
        """The contracted ``prod(row_dims) x prod(col_dims)`` matrix, padding included."""
        return mpo_to_dense(list(self.cores), self.row_dims, self.col_dims)

    def to_dense(self) -> torch.Tensor:
        """The weight, ``rows x cols``, contracted from the cores (padding clipped)."""
        return self.padded_dense()[: self.rows, : self.cols]

    def _weight_for_forward(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() and any(c.requires_grad for c in self.cores):
            self._cache = None
            return self.to_dense()
        if self._cache is None:
            # contracted in the cores' own dtype even under autocast: a bf16 cache would outlive the
            # autocast region and break a later fp32 forward
            with torch.no_grad(), torch.autocast(self.cores[0].device.type, enabled=False):
                self._cache = self.to_dense()
        return self._cache

    def _drop_cache(self) -> None:
        self._cache = None

    def train(self, mode: bool = True):
        if mode:  # entering training: the cores may change; staying in (or entering) eval keeps the cache
            self._drop_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._drop_cache()
        return super()._apply(fn, *args, **kwargs)

    # --- building and re-truncating ---------------------------------------------------------------
    def _load_mpo(self, mpo: MPO) -> None:
        """Replace the cores by those of ``mpo`` (shapes may change), keeping each core's requires_grad."""
        trainable = [c.requires_grad for c in self.cores]
        device = self.cores[0].device
        self.cores = nn.ParameterList(nn.Parameter(c.to(device).contiguous()) for c in mpo.cores)
        for c, flag in zip(self.cores, trainable):
            c.requires_grad_(flag)
        self._drop_cache()

    def decompose(self) -> MPO:
        """The current weight re-decomposed in canonical form (exact: bonds capped at their current size).

        After training the cores are no longer canonical; this gives the bond spectra that
        dimension squeezing reads.
        """
        with torch.no_grad():
            return mpo_decompose(self.padded_dense(), self.row_dims, self.col_dims, max_bond=self.bond_dims[1:-1])

    def truncate_(self, max_bond: int | Sequence[int]) -> float:
        """Cut bonds in place to ``max_bond`` (one cap, or one per internal bond); returns the error bound
        ``||W_before - W_after||_F`` read off the spectra."""
        mpo = self.decompose().truncate(max_bond)
        self._load_mpo(mpo)
        return mpo.error_bound()

    def _mpo_kwargs(self) -> dict[str, Any]:
        return {"row_dims": self.row_dims, "col_dims": self.col_dims, "bond_dims": self.bond_dims}


def _decompose_padded(weight: torch.Tensor, row_dims, col_dims, max_bond, rel_tol) -> MPO:
    rows, cols = weight.shape
    if math.prod(row_dims) < rows or math.prod(col_dims) < cols:
        raise ValueError(f"row_dims {list(row_dims)} and col_dims {list(col_dims)} multiply to {math.prod(row_dims)} x "
                         f"{math.prod(col_dims)}, less than the {rows} x {cols} weight; each product must be >= its side "
                         "(a larger one is zero-padded)")
    padded = pad_to(weight.detach(), math.prod(row_dims), math.prod(col_dims))
    return mpo_decompose(padded, row_dims, col_dims, max_bond=max_bond, rel_tol=rel_tol)


@register_layer
class MPOLinear(MPOLayerMixin):
    """``nn.Linear`` whose weight ``(out_features, in_features)`` is an MPO (rows = outputs)."""

    dense_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, row_dims: Sequence[int], col_dims: Sequence[int],
                 bond_dims: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.rows, self.cols = out_features, in_features
        self._init_cores(row_dims, col_dims, bond_dims)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_dense(cls, dense: nn.Linear, max_bond: int | Sequence[int] | None = None, rel_tol: float | None = None,
                   row_dims: Sequence[int] | None = None, col_dims: Sequence[int] | None = None,
                   num_cores: int = 5) -> "MPOLinear":
        """MPO of ``dense.weight`` with bonds capped at ``max_bond`` and/or a relative error ``rel_tol``.

        ``row_dims``/``col_dims`` factorize ``out_features``/``in_features`` (products may exceed
        them: the weight is zero-padded); by default ``mpo_shapes`` chooses them.
        """
        if not isinstance(dense, nn.Linear):
            raise TypeError(f"MPOLinear replaces nn.Linear, got {type(dense).__name__}")
        if row_dims is None or col_dims is None:
            row_dims, col_dims = mpo_shapes(dense.out_features, dense.in_features, num_cores)
        mpo = _decompose_padded(dense.weight, row_dims, col_dims, max_bond, rel_tol)
        layer = cls(dense.in_features, dense.out_features, row_dims, col_dims, mpo.bond_dims, dense.bias is not None)
        layer = layer.to(dense.weight.device, dense.weight.dtype)
        layer._load_mpo(mpo)
        if dense.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(dense.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._weight_for_forward(), self.bias)

    def init_kwargs(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, **self._mpo_kwargs(),
                "bias": self.bias is not None}

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, row_dims={self.row_dims}, col_dims={self.col_dims}, bonds={self.bond_dims}"


@register_layer
class MPOEmbedding(MPOLayerMixin):
    """``nn.Embedding`` whose table ``(num_embeddings, embedding_dim)`` is an MPO (rows = tokens)."""

    dense_type = nn.Embedding

    def __init__(self, num_embeddings: int, embedding_dim: int, row_dims: Sequence[int], col_dims: Sequence[int],
                 bond_dims: Sequence[int], padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.rows, self.cols = num_embeddings, embedding_dim
        self._init_cores(row_dims, col_dims, bond_dims)

    @classmethod
    def from_dense(cls, dense: nn.Embedding, max_bond: int | Sequence[int] | None = None, rel_tol: float | None = None,
                   row_dims: Sequence[int] | None = None, col_dims: Sequence[int] | None = None,
                   num_cores: int = 5) -> "MPOEmbedding":
        """MPO of the embedding table (vocabularies are zero-padded to a size that factors well)."""
        if not isinstance(dense, nn.Embedding):
            raise TypeError(f"MPOEmbedding replaces nn.Embedding, got {type(dense).__name__}")
        if row_dims is None or col_dims is None:
            row_dims, col_dims = mpo_shapes(dense.num_embeddings, dense.embedding_dim, num_cores)
        mpo = _decompose_padded(dense.weight, row_dims, col_dims, max_bond, rel_tol)
        layer = cls(dense.num_embeddings, dense.embedding_dim, row_dims, col_dims, mpo.bond_dims, dense.padding_idx)
        layer = layer.to(dense.weight.device, dense.weight.dtype)
        layer._load_mpo(mpo)
        return layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self._weight_for_forward(), self.padding_idx)

    def init_kwargs(self) -> dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim, **self._mpo_kwargs(),
                "padding_idx": self.padding_idx}

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} x {self.embedding_dim}, row_dims={self.row_dims}, col_dims={self.col_dims}, bonds={self.bond_dims}"


def mpo_layers(model: nn.Module) -> dict[str, MPOLayerMixin]:
    """The MPO layers of a model by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MPOLayerMixin)}
