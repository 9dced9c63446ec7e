"""The method registry: a method name -> how it replaces one group of target modules.

Adding a method family means writing its math (``mpstudy.factorize``), its layer
(``mpstudy.layers``) and a module here (``mpstudy/methods/<family>.py``) that calls
``register_method``; importing it at the bottom of this file makes ``compress``, the CLI and the
notebooks know the method by name. Every method takes the budget ``keep`` (the fraction of the
targeted weights kept); ``get_method(name).for_budget(model, keep, targets)`` says which of the
method's own keywords meet it. The precision methods (``bf16``, ``int8``) are the exception: they
keep every weight and change what it costs, so they take no ``keep``.
"""
from __future__ import annotations

from .registry import (
    METHODS,
    BudgetSearch,
    GroupCompressor,
    Method,
    ModelEditor,
    check_keep,
    get_method,
    per_matrix,
    register_method,
)

__all__ = ["Method", "METHODS", "register_method", "get_method", "per_matrix", "check_keep", "GroupCompressor",
           "ModelEditor", "BudgetSearch"]

# Method families register themselves on import (one line each).
from . import svd  # noqa: E402,F401
from . import mpo  # noqa: E402,F401
from . import offline  # noqa: E402,F401
from . import lobert  # noqa: E402,F401
from . import fwsvd  # noqa: E402,F401
from . import falcon  # noqa: E402,F401
from . import pruning  # noqa: E402,F401
from . import precision  # noqa: E402,F401 - bf16, int8: composed after any of the above
