"""MPOP (Liu et al., ACL 2021): MPO decomposition, lightweight fine-tuning, dimension squeezing.

The notebook of this study calls only what this package exports."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all
from .squeeze import *  # noqa: F401,F403
from .squeeze import __all__ as _squeeze_all

__all__ = list(_recipe_all) + list(_squeeze_all)
