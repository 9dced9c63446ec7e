"""What every factorized layer promises, so that surgery, accounting and save/load stay generic.

A compressed layer replaces a dense ``nn.Linear`` (or ``nn.Embedding``) in place. It must:

* be built from the dense module by ``from_dense(dense, **budget)``;
* rebuild the dense weight by ``to_dense()`` (exactly the matrix it computes with);
* say how many weights it stores (``num_params()``, biases included) without touching data;
* describe its own structure (``init_kwargs()``) so an empty copy can be built by
  ``cls(**init_kwargs)`` and filled from a state dict: that is how ``load_compressed`` works;
* optionally, list the parameters that train in lightweight mode (``adapter_params()``),
  the torchtune-style protocol later methods use to make "only these tensors train" a checked rule.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

__all__ = ["CompressedLayer", "LAYER_CLASSES", "register_layer"]

#: name -> class of every compressed layer, so a saved manifest can name its modules' classes.
LAYER_CLASSES: dict[str, type["CompressedLayer"]] = {}


def register_layer(cls: type["CompressedLayer"]) -> type["CompressedLayer"]:
    """Class decorator: make a compressed layer loadable by name from a saved manifest."""
    LAYER_CLASSES[cls.__name__] = cls
    return cls


class CompressedLayer(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the factorized replacements of dense layers."""

    #: the dense module type this layer stands in for (nn.Linear or nn.Embedding)
    dense_type: ClassVar[type[nn.Module]] = nn.Linear

    @classmethod
    @abc.abstractmethod
    def from_dense(cls, dense: nn.Module, **budget: Any) -> "CompressedLayer":
        """Factorize ``dense`` under the given budget (``keep``, the kept fraction, or the layer's own: rank, bond cap...)."""

    @abc.abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The dense weight this layer computes with, shaped like the original module's weight."""

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, rebuilt on every access (``to_dense()``); the forward never uses it.

        It exists for model code that reads ``.weight`` of a layer it expects to be dense: T5's
        feed-forward block checks ``wo.weight.dtype`` on every call, so a factorized ``wo`` pays
        one reconstruction per forward there (the latency benchmarks include this cost).
        """
        return self.to_dense()

    def num_params(self) -> int:
        """Stored weights of this layer (factors and bias), each shared tensor counted once."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    @abc.abstractmethod
    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild an empty layer of this shape."""

    def adapter_params(self) -> Iterator[nn.Parameter]:
        """Parameters that train in lightweight mode. Default: all of them."""
        return self.parameters()
