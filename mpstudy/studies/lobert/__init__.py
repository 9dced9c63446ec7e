"""LoBERT: SVD, Tucker and FALCON students of Q/K/V and the FFN, trained with patient KD.

The notebook of this study calls only what this package exports: the recipe, the typed results
record it writes (``record``), its campaign units (``units``) and, through ``claims``, the rules that judge the paper's claims."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all

from .record import *  # noqa: F401,F403
from .record import __all__ as _record_all
from .units import *  # noqa: F401,F403
from .units import __all__ as _units_all
from . import claims  # noqa: F401  (the paper's claims: mpstudy.studies.lobert.claims)

__all__ = list(_recipe_all) + list(_record_all) + list(_units_all) + ["claims"]
