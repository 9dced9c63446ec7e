"""Study 0: truncated SVD of a fine-tuned model's matrices, no training afterwards (the spine's study)."""
from .recipe import STUDY, sweep_unit, sweep_unit_name, sweep_table

__all__ = ["STUDY", "sweep_unit", "sweep_unit_name", "sweep_table"]
