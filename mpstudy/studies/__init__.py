"""One subpackage per study (paper), each holding that paper's recipe, its typed results record and
its claims; :mod:`mpstudy.studies.ledger` gathers the claims.

Study packages import the generic spine (``mpstudy.factorize`` ... ``mpstudy.records``); the spine
never imports a study package (``mpstudy.cli``, the entry point, is the one exception).
"""
