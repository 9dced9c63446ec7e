"""Composable pruning: l1 and head pruning (T5 too), module-level tuning once, composed configurations.

The notebook of this study calls only what this package exports: the recipe, the typed results
record it writes (``record``) and, through ``claims``, the rules that judge the paper's claims."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all

from .record import *  # noqa: F401,F403
from .record import __all__ as _record_all
from . import claims  # noqa: F401  (the paper's claims: mpstudy.studies.composability.claims)

__all__ = list(_recipe_all) + list(_record_all) + ["claims"]

from .units import *  # noqa: F401,F403,E402
from .units import __all__ as _units_all  # noqa: E402

__all__ += [n for n in _units_all if n not in __all__]
