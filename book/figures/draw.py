"""Draw the book's static figures (run from the repository root: python book/figures/draw.py).

Figures that depend on results are drawn by the study notebooks; these only depend on shapes.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mpstudy.factorize.mpo import mpo_bond_dims, mpo_num_params  # noqa: E402
from mpstudy.factorize.shapes import MPOP_MATRIX_SHAPES  # noqa: E402
from mpstudy.plots import mpo_diagram  # noqa: E402

HERE = Path(__file__).resolve().parent


def mpo_cores() -> None:
    (shape, rows, cols) = MPOP_MATRIX_SHAPES["ffn_in"]
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.2))
    mpo_diagram(rows, cols, mpo_bond_dims(rows, cols), ax=axes[0],
                title=f"{shape[0]} x {shape[1]} FFN weight as an MPO, untruncated "
                      f"({mpo_num_params(rows, cols):,} parameters; dense {shape[0] * shape[1]:,})")
    mpo_diagram(rows, cols, mpo_bond_dims(rows, cols, 82), ax=axes[1],
                title=f"the same with every bond capped at 82 ({mpo_num_params(rows, cols, 82):,} parameters)")
    fig.tight_layout()
    fig.savefig(HERE / "mpo_cores.png", dpi=110)


if __name__ == "__main__":
    mpo_cores()
