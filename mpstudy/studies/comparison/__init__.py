"""The comparison: every method at the same budgets, tasks, seeds and accounting.

The notebook of this study calls only what this package exports: the recipe (the grid's units), the
tables computed from their records (``tables``: intervals, paired differences, deployment), the typed results
record it writes (``record``) and, through ``claims``, the rules that judge the paper's claims."""
from .recipe import *  # noqa: F401,F403
from .recipe import __all__ as _recipe_all

from .tables import *  # noqa: F401,F403
from .tables import __all__ as _tables_all
from .record import *  # noqa: F401,F403
from .record import __all__ as _record_all
from . import claims  # noqa: F401  (the paper's claims: mpstudy.studies.comparison.claims)

__all__ = list(_recipe_all) + list(_tables_all) + list(_record_all) + ["claims"]
