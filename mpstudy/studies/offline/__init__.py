"""Offline compression (Banaei et al., 2023): autoencoder, Kronecker, Tucker, SVD, pruning, no fine-tuning.

The notebook of this study calls only what this package exports."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all

__all__ = list(_recipe_all)
