"""The weight-row autoencoder of Banaei et al. (2023): sizes from a compression ratio, its loss.

A module's weight ``W`` (``rows x cols``; ``nn.Linear.weight`` is ``out x in``, an embedding is
``vocab x hidden``) is treated as a data set of ``rows`` vectors. An encoder maps each row to a
latent code of size ``latent``; a decoder ``latent -> h1 -> h2 -> cols`` maps it back to a
*direction*, which is rescaled to the row's stored L2 norm ("direction is what you need"). What
is kept: the latent codes (``rows x latent``), the decoder and the ``rows`` norms; the encoder
is discarded after training. In "concatenated" mode the rows of one module type of all layers
form one data set and share one decoder.

Pure tensor math here (no ``nn.Module``): the sizes that hit a compression ratio, the loss and
the direction rescaling. The trainable modules live in :mod:`mpstudy.layers.autoencoder`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .budget import BUDGET_TOLERANCE, check_kept, keep_target, relative_miss

__all__ = ["AESizes", "ae_num_params", "ae_sizes_for_keep", "row_loss", "rescale_rows", "COS_WEIGHT"]

#: weight of ``mean(1 - cos)`` in the loss; RMSE gets ``1 - COS_WEIGHT`` (the original's 0.9091 / 0.0909)
COS_WEIGHT = 10 / 11


def ae_num_params(rows: int, cols: int, latent: int, h1: int, h2: int) -> int:
    """Numbers stored by the autoencoder representation of a ``rows x cols`` weight.

    ``rows * latent`` latent codes + ``rows`` row norms + the decoder's three Linears with biases:
    ``(latent*h1 + h1) + (h1*h2 + h2) + (h2*cols + cols)``.
    """
    return rows * latent + rows + latent * h1 + h1 + h1 * h2 + h2 + h2 * cols + cols


@dataclass(frozen=True)
class AESizes:
    """Layer sizes of a row autoencoder.

    Attributes:
        rows, cols: the (stacked) weight's shape.
        latent: latent code size per row.
        h1, h2: decoder hidden widths (``latent -> h1 -> h2 -> cols``).
        enc1, enc2: encoder hidden widths (``cols -> enc1 -> enc2 -> latent``; not stored).
    """

    rows: int
    cols: int
    latent: int
    h1: int
    h2: int
    enc1: int
    enc2: int

    @property
    def stored(self) -> int:
        """Latents + row norms + decoder (see :func:`ae_num_params`)."""
        return ae_num_params(self.rows, self.cols, self.latent, self.h1, self.h2)

    @property
    def decoder_params(self) -> int:
        return self.stored - self.rows * (self.latent + 1)


def ae_sizes_for_keep(rows: int, cols: int, keep: float, what: str | None = None) -> AESizes:
    """Autoencoder sizes whose stored numbers are within 5 % of ``keep * rows * cols``.

    The original's shape family is kept: decoder ``x -> 2x -> 4x -> cols`` and encoder
    ``cols -> 8x -> 4x -> x`` with ``x = latent``. Solving ``10 x^2 + (rows + 6 + 4 cols) x +
    rows + cols = keep rows cols`` (that family's stored count) gives ``x``; ``latent`` is its
    rounding and ``h1 = 2 latent``; then the widest decoder layer ``h2`` (each unit costs
    ``h1 + 1 + cols`` numbers) is solved for so the total lands on the target, which rounding
    ``x`` alone cannot do at small ``keep`` (one more latent unit costs a whole column of ``rows``).
    Example (hand-checked in the tests): 6 stacked MiniLM keys, 2304 x 384 at keep 0.1 (CR 10) -> latent 21,
    decoder 21 -> 42 -> 85 -> 384, 88,291 numbers (keeps 0.0998).

    Raises:
        ValueError: ``keep`` not in (0, 1), or no such sizes within 5 % (the message names ``keep`` and
            the smallest fraction reachable: even ``latent = 1`` stores ``2 rows + ...`` numbers).
    """
    what = what or f"a {rows}x{cols} weight"
    target = keep_target(rows * cols, keep)
    b = rows + 6 + 4 * cols
    x = (-b + math.sqrt(b * b + 40 * max(target - rows - cols, 0.0))) / 20
    best: AESizes | None = None
    # the rounding of x first; its neighbours only if rounding cannot land within tolerance
    for latent in sorted({max(1, math.floor(x)), max(1, math.ceil(x)), max(1, math.floor(x) - 1)}, key=lambda l: abs(l - x)):
        h1 = 2 * latent
        fixed = ae_num_params(rows, cols, latent, h1, 0)
        h2 = max(1, round((target - fixed) / (h1 + 1 + cols)))
        sizes = AESizes(rows, cols, latent, h1, h2, enc1=8 * latent, enc2=4 * latent)
        if best is None or relative_miss(sizes.stored, target) < relative_miss(best.stored, target):
            best = sizes
        if relative_miss(best.stored, target) <= BUDGET_TOLERANCE:
            break
    smallest = ae_num_params(rows, cols, 1, 2, 1)
    hint = (f"; the smallest autoencoder (latent 1, decoder 1 -> 2 -> 1 -> {cols}) stores {smallest:,} numbers "
            f"(keeps {smallest / (rows * cols):.3g})")
    check_kept("autoencoder", what, rows * cols, keep, best.stored, hint)
    assert relative_miss(best.stored, target) <= BUDGET_TOLERANCE
    return best


def rescale_rows(directions: torch.Tensor, norms: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of ``directions`` (``rows x cols``) rescaled to L2 norms ``norms`` (``rows``)."""
    return directions * (norms / directions.norm(dim=-1).clamp_min(eps)).unsqueeze(-1)


def row_loss(pred: torch.Tensor, target: torch.Tensor, cos_weight: float = COS_WEIGHT) -> torch.Tensor:
    """``cos_weight * mean_i(1 - cos(pred_i, target_i)) + (1 - cos_weight) * RMSE(pred, target)``.

    Rows are the last dimension's vectors; ``pred`` and ``target`` share a shape ``(..., cols)``.
    The original used 0.9091 / 0.0909 (10/11, 1/11).
    """
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
    rmse = torch.sqrt(torch.mean((pred - target) ** 2))
    return cos_weight * torch.mean(1 - cos) + (1 - cos_weight) * rmse
