"""Noach & Goldberg (2020) and FWSVD (Hsu et al., 2022): SVD below nd/(n+d), feature distillation, KD.

The notebook of this study calls only what this package exports."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all

__all__ = list(_recipe_all)
