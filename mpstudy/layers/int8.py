"""``Int8Linear``: torch's dynamically quantized Linear, made to read like an ``nn.Linear`` and to save
as plain tensors.

The computation is torch's own (``torch.ao.nn.quantized.dynamic.Linear``, the module
``torch.ao.quantization.quantize_dynamic`` puts in place of an ``nn.Linear``): the weight is stored
as int8 with a float32 scale (one per tensor, or one per output row) and an int32 zero point
(0: the quantization is symmetric, so a zero weight stays exactly zero); every forward quantizes
its float32 input to uint8 with a scale taken from that batch's range (7 bits of it,
``reduce_range``), multiplies in integers (fbgemm) and returns float32. So the layer takes and
returns float32 and runs on the CPU only; there is no gradient through it (inference only).

What this subclass changes, and why:

* ``weight`` and ``bias`` are float tensors (torch's module has methods of those names returning
  the quantized weight): ``weight`` is the dequantized matrix ``(int8 - zero_point) * scale``,
  ``(out_features, in_features)``, rebuilt on every access and never used by the forward, so a
  factorized layer holding int8 factors (:class:`~mpstudy.layers.lowrank.LowRankLinear`) still rebuilds
  the matrix it computes with by ``to_dense()``, and ``compress`` measures the quantization error
  like any other. Model code that reads ``.weight`` on every forward (T5's feed-forward reads
  ``wo.weight.dtype``) pays one dequantization per forward there.
* the state dict holds plain tensors, ``weight`` (int8), ``weight_scale`` (float32),
  ``weight_zero_point`` (int32) and ``bias`` (float32), which safetensors can store (torch's module
  stores a tuple holding a quantized tensor); loading them packs the weight again, bit for bit.
* the packed weight is an attribute, not a submodule, so ``named_modules()`` shows the layer alone.

Torch marks its eager quantization as deprecated (``torch.ao.quantization``, and quantized tensor
creation) in favour of torchao, but on this CPU torchao's dynamic int8 path ran slower than
float32 while torch's ran 1.7-2.9x faster (numbers in :mod:`mpstudy.methods.precision`); every call
that would print those notices goes through :func:`quiet_quantization`.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

__all__ = ["Int8Linear", "quantized_tensors", "quiet_quantization"]

_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence, for the calls inside, torch's notices that its eager quantization is deprecated.

    Torch prints a ``DeprecationWarning`` from ``torch.ao.quantization`` and a ``UserWarning`` on
    every quantized-tensor creation; this module uses that path on purpose (the measured reason is
    in :mod:`mpstudy.methods.precision`), so the notices are silenced here only, by their text,
    and every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other "
                                r"quantized tensor creation functions", category=UserWarning)
        yield


def quantized_tensors(module: nnqd.Linear) -> dict[str, torch.Tensor]:
    """What a torch dynamically quantized Linear stores, as plain tensors.

    For an int8 layer: ``weight`` (int8, ``(out_features, in_features)``), ``weight_scale``
    (float32) and ``weight_zero_point`` (int32), each of shape ``(1,)`` (per tensor) or
    ``(out_features,)`` (per output row), as fbgemm's packed weight holds them, and ``bias``
    (float32, ``(out_features,)``) if the layer has one. For a float16 dynamic layer: ``weight``
    (float16) and ``bias``.
    """
    weight, bias = module._weight_bias()  # torch's unpacking of the packed weight (its module API has no public one)
    if not weight.is_quantized:  # torch's float16 dynamic Linear
        out = {"weight": weight.detach().to(torch.float16)}
    elif weight.qscheme() in _PER_CHANNEL:
        if weight.q_per_channel_axis() != 0:
            raise ValueError(f"an int8 weight quantized per channel along axis {weight.q_per_channel_axis()}; "
                             "only per output row (axis 0) is supported")
        out = {"weight": weight.int_repr(), "weight_scale": weight.q_per_channel_scales().to(torch.float32),
               "weight_zero_point": weight.q_per_channel_zero_points().to(torch.int32)}
    else:
        out = {"weight": weight.int_repr(), "weight_scale": torch.tensor([weight.q_scale()], dtype=torch.float32),
               "weight_zero_point": torch.tensor([weight.q_zero_point()], dtype=torch.int32)}
    if bias is not None:
        out["bias"] = bias.detach()
    return {k: v.contiguous() for k, v in out.items()}


class Int8Linear(nnqd.Linear):
    """``y = x W^T + b`` with ``W`` stored in int8 and the product computed in int8 (torch's dynamic quantization).

    Args:
        in_features, out_features: the shape of the Linear it replaces.
        bias: whether there is a (float32) bias.
        per_channel: one scale per output row (``True``) or one for the whole weight.

    Build one from a float32 ``nn.Linear`` with :meth:`from_dense`; ``Int8Linear(**init_kwargs())``
    plus ``load_state_dict`` rebuilds a saved one exactly.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = False,
                 dtype: torch.dtype = torch.qint8) -> None:
        if dtype != torch.qint8:
            raise ValueError(f"Int8Linear holds qint8 weights, got dtype={dtype}")
        with quiet_quantization():
            super().__init__(in_features, out_features, bias_=bias, dtype=dtype)
        # the packed weight as a plain attribute: not a submodule, so state_dict and named_modules skip it
        object.__setattr__(self, "_packed_params", self._modules.pop("_packed_params"))
        self.per_channel, self.has_bias = False, bias
        if per_channel:  # start from a zero weight of the declared scheme, so a state dict's shapes are checked
            zero = torch.zeros(out_features, in_features)
            with quiet_quantization():
                q = torch.quantize_per_channel(zero, torch.ones(out_features, dtype=torch.float64),
                                               torch.zeros(out_features, dtype=torch.int64), 0, torch.qint8)
            self.set_weight_bias(q, self.bias)

    @classmethod
    def from_dense(cls, dense: nn.Linear, per_channel: bool = False) -> Int8Linear:
        """``dense`` quantized as ``quantize_dynamic`` does it (symmetric int8, per tensor or per output row).

        ``dense`` must be a float32 ``nn.Linear`` (not a subclass); it is left untouched.
        """
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
        )

        if type(dense) is not nn.Linear:
            raise TypeError(f"Int8Linear replaces a plain nn.Linear, got {type(dense).__name__}")
        if dense.weight.dtype != torch.float32:
            dtype = str(dense.weight.dtype).removeprefix("torch.")
            raise ValueError(f"Int8Linear quantizes float32 weights, got a {dtype} one")
        carrier = copy.copy(dense)  # shares the tensors; only the carrier gets the qconfig torch reads
        carrier.qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        with quiet_quantization(), torch.no_grad():
            layer = cls.from_float(carrier)
            # torch packs the Linear's own bias tensor (a reference): pack a copy, so later edits of
            # ``dense`` cannot reach the quantized layer
            layer.set_weight_bias(layer.qweight(), None if dense.bias is None else dense.bias.detach().clone())
        return layer

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """Pack the quantized weight ``w`` ``(out_features, in_features)`` (qint8) and the float bias ``b``."""
        if not (w.is_quantized and w.dtype == torch.qint8) or tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Int8Linear needs a qint8 weight of shape {(self.out_features, self.in_features)}, "
                             f"got {w.dtype} {tuple(w.shape)}")
        with quiet_quantization():
            super().set_weight_bias(w, b)
        self.per_channel, self.has_bias = w.qscheme() in _PER_CHANNEL, b is not None

    def to_dense(self) -> torch.Tensor:
        """The dequantized weight ``(int8 - zero_point) * scale``, ``(out_features, in_features)``, float32."""
        return self._weight_bias()[0].dequantize()

    @property
    def weight(self) -> torch.Tensor:
        """``to_dense()``, rebuilt on every access (the forward never uses it)."""
        return self.to_dense()

    @property
    def bias(self) -> torch.Tensor | None:
        """The float32 bias ``(out_features,)``, or ``None``."""
        return self._weight_bias()[1]

    def qweight(self) -> torch.Tensor:
        """The quantized weight itself (a qint8 tensor), as torch's ``weight()`` returns it."""
        return self._weight_bias()[0]

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild an empty layer of this shape and scheme."""
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.has_bias,
                "per_channel": self.per_channel}

    def _get_name(self) -> str:
        return "Int8Linear"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int8 per {'output row' if self.per_channel else 'tensor'}")

    # ----------------------------------------------------------------- state dict of plain tensors

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        for leaf, tensor in quantized_tensors(self).items():
            destination[prefix + leaf] = tensor

    def _expected(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        rows = self.out_features if self.per_channel else 1
        out = {"weight": (torch.int8, (self.out_features, self.in_features)), "weight_scale": (torch.float32, (rows,)),
               "weight_zero_point": (torch.int32, (rows,))}
        if self.has_bias:
            out["bias"] = (torch.float32, (self.out_features,))
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        expected = self._expected()
        found = {}
        for leaf, (dtype, shape) in expected.items():
            key = prefix + leaf
            if key not in state_dict:
                missing_keys.append(key)
                continue
            tensor = state_dict[key]
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                error_msgs.append(f"{key}: expected {str(dtype).removeprefix('torch.')} {shape}, "
                                  f"got {str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}")
                continue
            found[leaf] = tensor
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in expected)
        if len(found) < len(expected):
            return
        scale, zero = found["weight_scale"].to(torch.float64), found["weight_zero_point"].to(torch.int64)
        with quiet_quantization():
            if self.per_channel:
                q = torch._make_per_channel_quantized_tensor(found["weight"].cpu(), scale.cpu(), zero.cpu(), 0)
            else:
                q = torch._make_per_tensor_quantized_tensor(found["weight"].cpu(), float(scale[0]), int(zero[0]))
        bias = found.get("bias")
        self.set_weight_bias(q, None if bias is None else bias.detach().clone().cpu())
