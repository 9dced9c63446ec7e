"""The weight-row autoencoder layer (Banaei et al., 2023) and the training that builds it.

``AutoencoderLayer`` holds one matrix's latent codes ``(rows, latent)`` and row norms
``(rows,)`` and decodes its weight with a decoder shared by its group (one decoder for all
layers in the concatenated mode):

    W[i] = norms[i] * d(z_i) / ||d(z_i)||,   d = Linear(latent, h1) → LeakyReLU → Linear(h1, h2)
                                                 → LeakyReLU → Linear(h2, cols) → Tanh.

Latents, norms and the decoder are all parameters (they fine-tune). An embedding decodes only
the rows a training batch looks up; evaluation decodes the whole matrix once and caches it.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..factorize.autoencoder import COS_WEIGHT, AESizes, ae_sizes_for_keep, rescale_rows
from .base import register_layer
from .decoded import GroupMemberLayer, dense_spec

__all__ = ["RowDecoder", "RowEncoder", "AutoencoderLayer", "train_row_autoencoder", "autoencoder_group"]


class RowDecoder(nn.Module):
    """``(..., latent) -> (..., cols)``: three Linears, LeakyReLU between, Tanh at the end (a direction)."""

    def __init__(self, latent: int, h1: int, h2: int, cols: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, h1), nn.LeakyReLU(), nn.Linear(h1, h2), nn.LeakyReLU(),
                                 nn.Linear(h2, cols), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class RowEncoder(nn.Module):
    """``(..., cols) -> (..., latent)``: three Linears, each followed by LeakyReLU (as the original). Discarded after training."""

    def __init__(self, cols: int, enc1: int, enc2: int, latent: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cols, enc1), nn.LeakyReLU(), nn.Linear(enc1, enc2), nn.LeakyReLU(),
                                 nn.Linear(enc2, latent), nn.LeakyReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_layer
class AutoencoderLayer(GroupMemberLayer):
    """One matrix decoded from latent codes by a (shared) row decoder.

    Attributes:
        latents: ``(rows, latent)``; norms: ``(rows,)``; ``shared_module``: the ``RowDecoder``.
    """

    def __init__(self, kind: str, rows: int, cols: int, latent: int, h1: int, h2: int, bias: bool = False,
                 padding_idx: int | None = None, shared_key: str = "", group_size: int = 1, group_index: int = 0,
                 shared: nn.Module | None = None) -> None:
        super().__init__(kind, rows, cols, bias, padding_idx, shared_key, group_size, group_index)
        self.latent, self.h1, self.h2 = latent, h1, h2
        self.latents = nn.Parameter(torch.zeros(rows, latent))
        self.norms = nn.Parameter(torch.zeros(rows))
        self.attach_shared(shared)

    def build_shared(self) -> nn.Module:
        return RowDecoder(self.latent, self.h1, self.h2, self.cols)

    def structure(self) -> dict[str, Any]:
        return {"latent": self.latent, "h1": self.h1, "h2": self.h2}

    def decode(self) -> torch.Tensor:
        """``(rows, cols)``: every row's decoded direction at its stored norm."""
        return rescale_rows(self.shared_module(self.latents), self.norms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "embedding" and self.training:  # decode only the looked-up rows
            rows = rescale_rows(self.shared_module(self.latents[x]), self.norms[x])
            if self.padding_idx is not None:  # no gradient into the padding row, as nn.Embedding
                rows = torch.where((x == self.padding_idx).unsqueeze(-1), rows.detach(), rows)
            return rows
        return super().forward(x)

    @classmethod
    def from_dense(cls, dense: nn.Module, keep: float | None = None, **train_kwargs: Any) -> "AutoencoderLayer":
        """A single matrix keeping the fraction ``keep`` (a group of one); ``train_kwargs`` go to :func:`train_row_autoencoder`."""
        layers, _ = autoencoder_group([dense], keep=keep, shared_key="single", **train_kwargs)
        return layers[0]


def _full_loss(encoder: nn.Module, decoder: nn.Module, X: torch.Tensor, norms: torch.Tensor,
               cos_weight: float, chunk: int = 4096) -> float:
    """The row loss over all rows (exact, chunked: the RMSE is pooled over every entry)."""
    cos_sum, sq_sum = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(X), chunk):
            x = X[i:i + chunk]
            pred = rescale_rows(decoder(encoder(x)), norms[i:i + chunk])
            cos_sum += float((1 - F.cosine_similarity(pred, x, dim=-1)).sum())
            sq_sum += float(((pred - x) ** 2).sum())
    return cos_weight * cos_sum / len(X) + (1 - cos_weight) * (sq_sum / X.numel()) ** 0.5


def _train_epoch(encoder, decoder, X, norms, opt, batch_size, generator, cos_weight) -> None:
    perm = torch.randperm(len(X), generator=generator).to(X.device)
    for i in range(0, len(X), batch_size):
        idx = perm[i:i + batch_size]
        x = X[idx]
        pred = rescale_rows(decoder(encoder(x)), norms[idx])
        cos = F.cosine_similarity(pred, x, dim=-1)
        loss = cos_weight * torch.mean(1 - cos) + (1 - cos_weight) * torch.sqrt(torch.mean((pred - x) ** 2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def train_row_autoencoder(X: torch.Tensor, sizes: AESizes, epochs: int = 30, batch_size: int = 16, lr: float = 1e-3,
                          step_size: int = 10, gamma: float = 0.8, seed: int = 0, cos_weight: float = COS_WEIGHT,
                          device: str | torch.device = "cpu") -> tuple[RowDecoder, torch.Tensor, dict[str, Any]]:
    """Train an autoencoder on the rows of ``X`` and return the decoder and the latent codes.

    Adam (``lr``) with a StepLR schedule (``step_size`` epochs, ``gamma``), shuffled mini-batches
    of ``batch_size`` rows, loss :func:`~mpstudy.factorize.autoencoder.row_loss` on the
    norm-rescaled reconstruction. After every epoch the loss over *all rows* is computed and the
    best epoch's weights are kept: the rows are the whole data set (there is nothing else to
    generalise to), so model selection needs no text at all. The original instead chose the
    epoch by masked-LM perplexity on the WikiText-103 *test* split.

    Args:
        X: the rows, ``(N, cols)``.
        sizes: from :func:`~mpstudy.factorize.autoencoder.ae_sizes_for_keep` (``sizes.rows == N``).
        epochs: passes over the rows (0: the untrained initialisation, useful for tests).
        seed: seeds the initialisation and the row order (the global RNG is left untouched).

    Returns:
        ``(decoder, latents, info)``: the decoder (on CPU), latents ``(N, latent)`` and ``info`` with
        ``losses`` (full loss after each epoch, index 0 = before training), ``best_epoch``,
        ``loss`` (the kept one) and ``seconds``.
    """
    if sizes.rows != len(X) or sizes.cols != X.shape[1]:
        raise ValueError(f"sizes are for {sizes.rows}x{sizes.cols} rows, got X of shape {tuple(X.shape)}")
    if not isinstance(epochs, int) or epochs < 0 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"epochs must be an int >= 0 and batch_size an int >= 1, got {epochs!r} and {batch_size!r}")
    start = time.perf_counter()
    device = torch.device(device)
    X = X.detach().float().to(device)
    norms = X.norm(dim=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = RowEncoder(sizes.cols, sizes.enc1, sizes.enc2, sizes.latent).to(device)
        decoder = RowDecoder(sizes.latent, sizes.h1, sizes.h2, sizes.cols).to(device)
    order = torch.Generator().manual_seed(seed)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    losses = [_full_loss(encoder, decoder, X, norms, cos_weight)]
    best = (losses[0], 0, copy.deepcopy(encoder.state_dict()), copy.deepcopy(decoder.state_dict()))
    for epoch in range(1, epochs + 1):  # compress() runs under no_grad; training needs gradients
        with torch.enable_grad():
            _train_epoch(encoder, decoder, X, norms, opt, batch_size, order, cos_weight)
        sched.step()
        losses.append(_full_loss(encoder, decoder, X, norms, cos_weight))
        if losses[-1] < best[0]:
            best = (losses[-1], epoch, copy.deepcopy(encoder.state_dict()), copy.deepcopy(decoder.state_dict()))
    encoder.load_state_dict(best[2])
    decoder.load_state_dict(best[3])
    with torch.no_grad():
        latents = torch.cat([encoder(X[i:i + 4096]) for i in range(0, len(X), 4096)])
    info = {"losses": losses, "best_epoch": best[1], "loss": best[0], "seconds": time.perf_counter() - start,
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    return decoder.cpu(), latents.cpu(), info


def autoencoder_group(modules: list[nn.Module], keep: float | None, shared_key: str, epochs: int = 30,
                      batch_size: int = 16, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                      what: str | None = None) -> tuple[list[AutoencoderLayer], dict[str, Any]]:
    """Compress dense modules of one shape jointly: their rows (stacked) train one autoencoder.

    Args:
        modules: ``nn.Linear`` or ``nn.Embedding`` modules whose weights share ``cols``; one
            module is the separated mode, several the concatenated one.
        keep: kept fraction of the group's weights (latents + norms + one decoder vs all weights), in (0, 1).
        shared_key: names the group (for reloading).

    Returns:
        ``(layers, info)``: one ``AutoencoderLayer`` per module (in order; the first owns the
        decoder) and the training info of :func:`train_row_autoencoder` plus the sizes.
    """
    if keep is None:
        raise ValueError("the autoencoder needs keep= (the fraction of the weights kept, in (0, 1))")
    specs = [dense_spec(m) for m in modules]
    weights = [m.weight.detach() for m in modules]
    if len({(s["kind"], s["cols"]) for s in specs}) != 1:
        raise ValueError(f"a concatenated group needs one kind and one row width, got shapes {[tuple(w.shape) for w in weights]}")
    X = torch.cat(weights)
    what = what or (f"a {X.shape[0]}x{X.shape[1]} weight" if len(modules) == 1 else
                    f"{len(modules)} stacked weights ({X.shape[0]}x{X.shape[1]} rows)")
    sizes = ae_sizes_for_keep(X.shape[0], X.shape[1], keep, what=what)
    decoder, latents, info = train_row_autoencoder(X, sizes, epochs=epochs, batch_size=batch_size, lr=lr,
                                                   seed=seed, device=device)
    norms = X.detach().float().norm(dim=1)
    layers, start = [], 0
    dtype = weights[0].dtype
    decoder = decoder.to(weights[0].device, dtype)
    for i, (module, spec) in enumerate(zip(modules, specs)):
        layer = AutoencoderLayer(**spec, latent=sizes.latent, h1=sizes.h1, h2=sizes.h2, shared_key=shared_key,
                                 group_size=len(modules), group_index=i, shared=decoder).to(weights[0].device, dtype)
        with torch.no_grad():
            layer.latents.copy_(latents[start:start + spec["rows"]])
            layer.norms.copy_(norms[start:start + spec["rows"]])
            if layer.bias is not None:
                layer.bias.copy_(module.bias)
        start += spec["rows"]
        layers.append(layer)
    return layers, {**info, "latent": sizes.latent, "h1": sizes.h1, "h2": sizes.h2, "stored": sizes.stored}
