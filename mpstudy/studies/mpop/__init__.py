"""MPOP (Liu et al., ACL 2021): MPO decomposition, lightweight fine-tuning, dimension squeezing.

The notebook of this study calls only what this package exports: the recipe, the campaign units and
their tables (``units``), the typed results record it writes (``record``) and, through ``claims``, the
rules that judge the paper's claims."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all
from .squeeze import *  # noqa: F401,F403
from .squeeze import __all__ as _squeeze_all
from .units import *  # noqa: F401,F403
from .units import __all__ as _units_all

from .record import *  # noqa: F401,F403
from .record import __all__ as _record_all
from . import claims  # noqa: F401  (the paper's claims: mpstudy.studies.mpop.claims)

__all__ = list(_recipe_all) + list(_squeeze_all) + list(_units_all) + list(_record_all) + ["claims"]
