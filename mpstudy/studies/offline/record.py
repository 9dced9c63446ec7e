"""The typed results record of study 04 (offline compression, Banaei et al. 2023): one row per grid
cell (module type x compression ratio x mode x method x autoencoder seed) measured without any
training, one row per fine-tuned model (with its dev ``predictions`` since the campaign, in the row
order of the record's ``references``), and the shared dense baseline's score per seed.

Methods and modes are named by the constants below (the record uses the short method names; the
registered names map to them through :data:`SHORT_NAMES`); a row with any other label is refused
when the record is built. Module types are target roles (``"key"``, ``"ffn_out"``, ...), free text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..record_base import Row, StudyRecord

__all__ = ["OFFLINE_STUDY", "AE", "KRONECKER", "TUCKER", "SVD", "PRUNE", "OFFLINE_METHODS", "FACTORIZATIONS",
           "SHORT_NAMES", "RANDOMIZED", "SEPARATED", "CONCATENATED", "MODES", "DENSE", "DENSE_MODULE", "DENSE_MODE", "GridCell",
           "FinetunedRun", "OfflineRecord"]

OFFLINE_STUDY = "04_offline"
AE, KRONECKER, TUCKER, SVD, PRUNE = "ae", "kronecker", "tucker", "svd", "prune"
OFFLINE_METHODS = (AE, KRONECKER, TUCKER, SVD, PRUNE)
FACTORIZATIONS = (KRONECKER, TUCKER, SVD)  #: the autoencoder's rivals in the paper's first claim
#: registered method name (:mod:`mpstudy.methods.offline`) -> the short name the record uses
SHORT_NAMES = {"offline-ae": AE, "offline-kronecker": KRONECKER, "offline-tucker": TUCKER, "offline-svd": SVD,
               "offline-prune": PRUNE}
#: the methods whose result depends on the seed (the others give the same numbers for every seed)
RANDOMIZED = (AE,)
SEPARATED, CONCATENATED = "separated", "concatenated"
MODES = (SEPARATED, CONCATENATED)  #: each layer on its own, or one module type of all layers together
DENSE, DENSE_MODULE, DENSE_MODE = "dense", "(dense)", ""  #: method, module and mode of the dense model's rows


@dataclass
class GridCell(Row):
    """One compressed model, measured offline: reconstruction of its matrices and drift of its
    encoder's states from the uncompressed model's. An infeasible cell (``feasible`` false) keeps
    its ``error`` in ``extra``."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": OFFLINE_METHODS, "mode": MODES}
    module: str
    cr: float
    mode: str
    method: str
    feasible: bool = True
    seed: int | None = None
    achieved_cr: float | None = None
    params_before: int | None = None
    params_after: int | None = None
    groups: int | None = None
    compress_seconds: float | None = None
    rel_error: float | None = None  #: relative Frobenius error of the compressed matrices
    row_cosine: float | None = None  #: mean cosine of their rows to the originals
    hidden_rel_error: float | None = None  #: relative error of the encoder's token states
    token_cosine: float | None = None
    sentence_cosine: float | None = None  #: cosine of the mean-pooled sentence embeddings (the function measure)
    sentence_cosine_min: float | None = None
    perplexity: float | None = None  #: masked-LM perplexity, where the model has an MLM head
    ae_latent: float | None = None
    ae_epochs: float | None = None
    ae_best_epoch: float | None = None
    ae_loss: float | None = None
    ae_seconds: float | None = None


@dataclass
class FinetunedRun(Row):
    """One model fine-tuned on the task: a compressed cell's model, or the uncompressed pre-trained model
    fine-tuned with the same recipe (method :data:`DENSE`, module :data:`DENSE_MODULE`, mode
    :data:`DENSE_MODE`); ``predictions``: its dev predictions (None in records from before the campaign)."""

    LABELS: ClassVar[dict[str, tuple]] = {"method": (DENSE, *OFFLINE_METHODS), "mode": (DENSE_MODE, *MODES)}
    module: str
    cr: float
    mode: str
    method: str
    seed: int
    score: float
    train_seconds: float | None = None
    predictions: list | None = None


@dataclass
class OfflineRecord(StudyRecord):
    """Study 04's record: ``grid`` (every cell, offline), ``finetuned`` (the cells of ``finetune_cells``
    with their methods, and the uncompressed model with the same recipe), ``dense_scores`` (seed -> the
    shared dense baseline's score) and ``references`` (the dev labels the predictions are in the order of;
    None in records from before the campaign)."""

    STUDY = OFFLINE_STUDY
    ROWS: ClassVar[dict[str, type]] = {"grid": GridCell, "finetuned": FinetunedRun}
    grid: list[GridCell]
    finetuned: list[FinetunedRun] = field(default_factory=list)
    dense_scores: dict[Any, float] = field(default_factory=dict)
    references: list | None = None

    def feasible(self) -> list[GridCell]:
        """The cells whose budget the method could meet."""
        return [r for r in self.grid if r.feasible]

    @property
    def task(self) -> str:
        """The task the models were fine-tuned on (the metric family of every interval)."""
        return str(self.parameters.get("task", self.provenance.get("task")))

    def finetuned_predictions(self, module: str, cr: float, mode: str, method: str) -> dict[int, list] | None:
        """seed -> dev predictions of one fine-tuned configuration; None when it has no run, a run has no
        predictions (an old record), or the record has no ``references``."""
        runs = [r for r in self.finetuned
                if (r.module, float(r.cr), r.mode, r.method) == (module, float(cr), mode, method)]
        if not runs or self.references is None or any(r.predictions is None for r in runs):
            return None
        return {int(r.seed): r.predictions for r in runs}
