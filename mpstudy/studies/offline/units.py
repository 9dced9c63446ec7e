"""Study 04's campaign units: the offline grid, one unit per (module type, autoencoder seed), and the
fine-tuned models, one unit per (cell, method, seed), with the tables computed from their records.

The paper compresses the **pre-trained** model offline and fine-tunes the result like an ordinary model,
so every unit starts from the pre-trained weights of the profile's dense block (not from the shared
fine-tuned dense baselines):

* :func:`grid_unit` -- one module type at every compression ratio, mode and method, measured without any
  training (reconstruction of the matrices, drift of the encoder's outputs). Seed 0's unit runs every
  method; the other seeds' units run only the methods whose result depends on the seed
  (:data:`~mpstudy.studies.offline.record.RANDOMIZED`: the autoencoder), since the others would repeat
  seed 0's numbers exactly.
* :func:`finetune_unit` -- one compressed pre-trained model (a cell and a method) fine-tuned on the task
  with seed ``s`` (classification head, autoencoder, data order), or the *uncompressed* pre-trained model
  fine-tuned with the identical recipe (method ``dense``): the same-budget comparator. The rows are drawn
  seeded from the dense baselines' training split (:mod:`mpstudy.studies.dense`) and the record holds the
  dev predictions in the dense units' row order, so every comparison is paired on the same examples.
* :func:`grid_frame`, :func:`finetune_table`, :func:`paired_table` -- the page's tables.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...accounting import count_parameters
from ...campaign import Lazy, unit
from ...models import load_model
from ...stats import baseline_learned, paired_difference, score_interval
from ...tasks import task_fingerprint
from ...train import TrainConfig, predict, resolve_precision, train
from .recipe import compress_and_measure, encoder_states, method_budget
from .record import DENSE, MODES, OFFLINE_STUDY, RANDOMIZED, SEPARATED, SHORT_NAMES

__all__ = ["STUDY", "GRID_SECONDS", "SECONDS_PER_STEP", "GridSettings", "FinetuneSettings", "pretrained",
           "grid_unit_name", "grid_unit", "grid_methods", "finetune_unit_name", "finetune_unit", "finetune_plan",
           "unit_names", "grid_frame", "finetune_table", "paired_table"]

STUDY = OFFLINE_STUDY
#: wall seconds of one grid unit of all-MiniLM-L6-v2 on one thread here, by (module type, all methods or the
#: autoencoder alone), from the cpu record of 2026-11 (its compress_seconds, 2 cores under other jobs' load)
#: plus one drift pass per cell: the time box's estimate, an upper bound
GRID_SECONDS = {("word_embeddings", True): 240, ("word_embeddings", False): 80, ("key", True): 120,
                ("key", False): 90, ("ffn_out", True): 200, ("ffn_out", False): 120}
#: wall seconds per optimizer step of all-MiniLM-L6-v2 at batch 32 x 64 tokens, bf16, one thread (the
#: compressed layers decode their weights at every training forward): the estimate of a fine-tuning unit
SECONDS_PER_STEP = 0.6


@dataclass(frozen=True)
class GridSettings:
    """How the offline grid compresses (the notebook's parameters, gathered): ``crs`` (compression ratios,
    dense weights / stored numbers), ``methods`` (registered names), ``modes``, the autoencoder's
    ``ae_epochs`` / ``ae_batch_size`` / ``ae_lr`` (a number or a dict per module type), the sentences the
    drift is measured on (the first ``drift_sentences`` of the dev split) and ``max_length``."""

    model_name: str
    crs: tuple[float, ...]
    methods: tuple[str, ...]
    modes: tuple[str, ...]
    ae_epochs: Any
    ae_batch_size: int
    ae_lr: Any
    drift_sentences: int
    max_length: int

    def ae(self, seed: int) -> dict[str, Any]:
        """The autoencoder's keywords for :func:`~mpstudy.studies.offline.recipe.method_budget`."""
        return {"epochs": self.ae_epochs, "batch_size": self.ae_batch_size, "lr": self.ae_lr, "seed": seed}

    def budget(self, method: str, module: str, model, seed: int) -> dict[str, Any]:
        """The method's extra keywords for ``module`` (the autoencoder's with ``seed``)."""
        return method_budget(method, module, model, self.ae(seed) if method == "offline-ae" else None)

    def modes_of(self, module: str) -> tuple[str, ...]:
        """Word embeddings are one matrix: the two modes coincide, only "separated" runs."""
        return (SEPARATED,) if module == "word_embeddings" else self.modes

    def module_spec(self, module: str) -> dict[str, Any]:
        """What compressing ``module`` depends on (its autoencoder settings picked out of the dicts)."""
        pick = lambda v: v[module] if isinstance(v, Mapping) else v  # noqa: E731
        return {"model": self.model_name, "module": module, "ae": {"epochs": pick(self.ae_epochs),
                "batch_size": self.ae_batch_size, "lr": pick(self.ae_lr)}, "drift_sentences": self.drift_sentences,
                "max_length": self.max_length}


@dataclass(frozen=True)
class FinetuneSettings:
    """How every fine-tuned model trains: the dense block's ``batch_size``, ``max_length`` and ``precision``,
    and the study's ``lr``, ``epochs``/``max_steps`` (``max_steps`` overrides ``epochs``) and
    ``warmup_ratio``; evaluated once, at the last step (no checkpoint is chosen on the dev set)."""

    batch_size: int
    max_length: int
    precision: str
    lr: float
    epochs: float
    max_steps: int | None
    warmup_ratio: float

    def config(self, seed: int) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                           max_length=self.max_length, warmup_ratio=self.warmup_ratio, seed=seed,
                           precision=self.precision, bucket_batches=8, keep_best=False, progress=False,
                           eval_every=self.max_steps, device="auto")

    def spec(self, seed: int) -> dict[str, Any]:
        out = self.config(seed).key_fields()
        out["precision"] = self.precision  # the profile's choice, as in the dense units' specs
        return out

    def steps(self, task) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(len(task.train) / self.batch_size * self.epochs)


def pretrained(model_name: str, task, drift_sentences: int, max_length: int) -> Lazy:
    """The pre-trained model (head of seed 0), its tokenizer, the drift sentences (the first
    ``drift_sentences`` of the dev split) and the uncompressed encoder's states on them, made on first use."""
    def make() -> dict[str, Any]:
        model, tokenizer = load_model(model_name, task=task, seed=0)
        sentences = [ex["text_a"] if "text_a" in ex else ex["text"] for ex in task.dev[:drift_sentences]]
        return {"model": model, "tokenizer": tokenizer, "sentences": sentences,
                "reference": encoder_states(model, tokenizer, sentences, max_length=max_length)}

    return Lazy(make)


def _cr_slug(cr: float) -> str:
    return f"{cr:g}".replace(".", "p")


def grid_methods(settings: GridSettings, seed: int, first_seed: int) -> tuple[str, ...]:
    """The methods a grid unit of ``seed`` runs: all of them for the first seed, the seeded ones otherwise."""
    return settings.methods if seed == first_seed else tuple(m for m in settings.methods
                                                             if SHORT_NAMES[m] in RANDOMIZED)


def grid_unit_name(profile: str, task_name: str, module: str, seed: int) -> str:
    """``<profile>-<task>-grid-<module>-seed<k>``."""
    return f"{profile}-{task_name}-grid-{module}-seed{seed}"


def grid_unit(settings: GridSettings, task, module: str, seed: int, profile: str, *, first_seed: int = 0,
              base: Lazy | None = None, results_dir: str | None = None) -> dict[str, Any]:
    """The record of one module type's offline grid for one seed (computed, or read from ``results/04_offline/units/``).

    ``base``: :func:`pretrained` (shared by the grid units of one page). The record's ``result``: ``rows``,
    one per (CR, mode, method) as :func:`~mpstudy.studies.offline.recipe.compress_and_measure` returns them
    (registered method names; an infeasible cell has ``feasible`` false and its ``error``).
    """
    methods = grid_methods(settings, seed, first_seed)
    base = base if base is not None else pretrained(settings.model_name, task, settings.drift_sentences,
                                                    settings.max_length)
    spec = {"profile": profile, "task": task.name, "data": task_fingerprint(task), **settings.module_spec(module),
            "crs": list(settings.crs), "modes": list(settings.modes_of(module)), "methods": list(methods), "seed": seed}

    def compute() -> dict[str, Any]:
        pre = base()
        rows = []
        for cr in settings.crs:
            for mode in settings.modes_of(module):
                for method in methods:
                    _, row = compress_and_measure(pre["model"], method, module, 1 / cr, mode, pre["reference"],
                                                  pre["tokenizer"], pre["sentences"], max_length=settings.max_length,
                                                  **settings.budget(method, module, pre["model"], seed))
                    rows.append({**row, "seed": seed})
        return {"rows": rows}

    estimate = GRID_SECONDS.get((module, seed == first_seed), 240)
    return unit(STUDY, grid_unit_name(profile, task.name, module, seed), spec, compute, results_dir=results_dir,
                estimate_s=estimate)


def finetune_unit_name(profile: str, task_name: str, cell: Sequence | None, method: str, seed: int) -> str:
    """``<profile>-<task>-ft-<method>-<module>-cr<cr>-<mode>-seed<k>``, or ``<profile>-<task>-ft-dense-seed<k>``
    for the uncompressed model (``cell`` None, ``method`` ``"dense"``)."""
    if method == DENSE:
        return f"{profile}-{task_name}-ft-dense-seed{seed}"
    module, cr, mode = cell
    return f"{profile}-{task_name}-ft-{SHORT_NAMES[method]}-{module}-cr{_cr_slug(cr)}-{mode}-seed{seed}"


def finetune_plan(cells: Sequence[Sequence], methods: Sequence[str]) -> list[tuple[tuple | None, str]]:
    """``(cell, method)`` of every fine-tuned configuration: the uncompressed model first (``(None, "dense")``),
    then each cell with each method. A cell ``[module, cr, mode, [methods...]]`` names its own methods;
    ``[module, cr, mode]`` takes ``methods``."""
    out: list[tuple[tuple | None, str]] = [(None, DENSE)]
    for cell in cells:
        if len(cell) not in (3, 4) or cell[2] not in MODES:
            raise ValueError(f"a fine-tuned cell is [module, cr, mode] or [module, cr, mode, [methods]] with mode in "
                             f"{list(MODES)}, got {cell!r}")
        for method in (cell[3] if len(cell) == 4 else methods):
            if method not in SHORT_NAMES:
                raise ValueError(f"fine-tuned method must be one of {list(SHORT_NAMES)}, got {method!r}")
            out.append(((cell[0], cell[1], cell[2]), method))
    return out


def _predictions(model, tokenizer, task, settings: FinetuneSettings) -> tuple[list, str]:
    precision = resolve_precision(settings.precision, next(model.parameters()).device)
    preds, _ = predict(model, tokenizer, task, max_length=settings.max_length, precision=precision)
    cast = float if task.kind == "regression" else int
    return [cast(p) for p in preds], precision


#: the offline measurements a fine-tuning unit keeps of the model it started from
_OFFLINE_KEYS = ("feasible", "error", "achieved_cr", "params_before", "params_after", "rel_error", "row_cosine",
                 "sentence_cosine", "hidden_rel_error", "ae_latent", "ae_best_epoch", "ae_loss", "compress_seconds")


def finetune_unit(grid: GridSettings, settings: FinetuneSettings, task, cell: Sequence | None, method: str,
                  seed: int, profile: str, *, base: Lazy | None = None,
                  results_dir: str | None = None) -> dict[str, Any]:
    """The record of one fine-tuned model (computed, or read from ``results/04_offline/units/``).

    Args:
        grid: the grid's settings (model, the autoencoder's training, the drift sentences).
        settings: the fine-tuning recipe, the same for every method and the uncompressed model.
        task: the dense baselines' task (``DenseBaseline.task``): the same training rows and dev order.
        cell: ``(module, cr, mode)``; None with ``method`` ``"dense"`` (the uncompressed model).
        method: a registered offline method, or ``"dense"``.
        seed: the classification head's initialisation, the autoencoder's seed and the data order.
        base: :func:`pretrained` (its drift reference; shared with the grid units).

    The record's ``result``: ``metrics`` (dev), ``main_metric``, ``predictions`` (dev, row order),
    ``offline`` (the compressed start's offline measurements; None for dense), ``stored``/``trainable``
    (:func:`mpstudy.count_parameters` after training), ``steps``, ``train_seconds``, ``precision``; or, when
    the method cannot meet the cell's ratio, ``feasible`` false and the ``error`` (no training).
    """
    if method != DENSE and method not in SHORT_NAMES:
        raise ValueError(f"method must be 'dense' or one of {list(SHORT_NAMES)}, got {method!r}")
    base = base if base is not None else pretrained(grid.model_name, task, grid.drift_sentences, grid.max_length)
    spec: dict[str, Any] = {"profile": profile, "task": task.name, "data": task_fingerprint(task),
                            "model": grid.model_name, "method": method, "seed": seed, "train": settings.spec(seed)}
    if method != DENSE:
        module, cr, mode = cell
        spec.update(module=module, cr=cr, mode=mode, grid=grid.module_spec(module))

    def compute() -> dict[str, Any]:
        model, tokenizer = load_model(grid.model_name, task=task, seed=seed)
        offline = None
        if method != DENSE:
            pre = base()
            model, row = compress_and_measure(model, method, module, 1 / cr, mode, pre["reference"], tokenizer,
                                              pre["sentences"], max_length=grid.max_length,
                                              **grid.budget(method, module, model, seed))
            offline = {k: row[k] for k in _OFFLINE_KEYS if k in row}
            if model is None:
                return {"feasible": False, "error": row.get("error"), "offline": offline}
        result = train(model, tokenizer, task, settings.config(seed))
        preds, precision = _predictions(model, tokenizer, task, settings)
        refs = [ex["label"] for ex in task.dev]
        counts = count_parameters(model, nonzero=False)
        return {"feasible": True, "metrics": task.compute_metrics(preds, refs), "main_metric": task.main_metric,
                "predictions": preds, "offline": offline, "stored": counts["stored"],
                "trainable": counts["trainable"], "steps": result.steps, "train_seconds": result.train_seconds,
                "precision": precision}

    estimate = settings.steps(task) * SECONDS_PER_STEP + 30
    return unit(STUDY, finetune_unit_name(profile, task.name, cell, method, seed), spec, compute,
                results_dir=results_dir, estimate_s=estimate)


def unit_names(profile: str, task_name: str, modules: Sequence[str], ae_seeds: Sequence[int],
               plan: Sequence[tuple[tuple | None, str]], seeds: Sequence[int]) -> list[str]:
    """Every unit a study run asks for, in the order it asks (for :func:`mpstudy.campaign.declare`)."""
    names = [grid_unit_name(profile, task_name, m, s) for m in modules for s in ae_seeds]
    return names + [finetune_unit_name(profile, task_name, cell, method, s) for cell, method in plan for s in seeds]


# --------------------------------------------------------------------------- tables


def grid_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Every grid unit's rows in one frame, methods by their short names (``ae``, ``svd``...)."""
    rows = [row for r in records for row in r["result"]["rows"]]
    frame = pd.DataFrame(rows)
    frame["method"] = frame["method"].map(SHORT_NAMES)
    return frame


def _one(preds: Mapping[int, list]) -> Any:
    """A seed mapping as :mod:`mpstudy.stats` takes it: the mapping with 2+ seeds, the list with one."""
    return preds if len(preds) > 1 else next(iter(preds.values()))


def _label(cell: Sequence | None, method: str) -> str:
    if cell is None:
        return f"{DENSE} (same budget)" if method == DENSE else method
    return f"{SHORT_NAMES.get(method, method)} {cell[0]} CR {cell[1]:g} {cell[2]}"


def finetune_table(dense: Mapping[int, Any], records: Mapping[tuple, Mapping[str, Any]],
                   resamples: int = 2000) -> pd.DataFrame:
    """One row per fine-tuned configuration, the shared dense baseline first (the reference, trained with its
    own, longer recipe), then the uncompressed model fine-tuned with the study's recipe (``dense (same
    budget)``), then every compressed cell and method: the dev score over seeds with its 95 % interval, the
    paired difference to the same-budget dense model (same examples, seed by seed) with its interval, and
    ``collapse``: the score does not clear the trivial predictor (majority class / constant) by more than
    its interval (:func:`mpstudy.stats.baseline_learned`), so the row is no result.

    ``dense``: seed -> :class:`~mpstudy.studies.dense.DenseBaseline`; ``records``: ``(cell, method, seed)`` ->
    :func:`finetune_unit` record (``cell`` None for the uncompressed model), for the dense seeds. A
    configuration whose method could not meet its ratio is left out.
    """
    seeds = sorted(dense)
    first = dense[seeds[0]]
    task_name, refs = first.task.name, first.record["result"]["references"]
    trivial = first.record["result"]["trivial"]
    configs = list(dict.fromkeys((c, m) for c, m, _ in records))
    by_config = {}
    for cell, method in configs:
        found = {s: records[(cell, method, s)]["result"] for s in seeds if (cell, method, s) in records}
        if sorted(found) != seeds:
            raise ValueError(f"{_label(cell, method)}: records for seeds {sorted(found)}, the dense baselines have {seeds}")
        if all(r.get("feasible", True) for r in found.values()):
            by_config[(cell, method)] = _one({s: r["predictions"] for s, r in found.items()})
    same = by_config.get((None, DENSE))
    rows = []
    shared = _one({s: dense[s].record["result"]["predictions"] for s in seeds})
    for (cell, method), preds in [((None, "dense (shared baseline)"), shared), *by_config.items()]:
        score = score_interval(task_name, preds, refs, resamples=resamples)
        row = {"model": _label(cell, method), "module": cell[0] if cell else "", "cr": cell[1] if cell else 1,
               "mode": cell[2] if cell else "", "method": SHORT_NAMES.get(method, method),
               "score": score.estimate, "score_low": score.low, "score_high": score.high, "seeds": len(seeds),
               "collapse": not baseline_learned(score, trivial).learned}
        if same is not None and cell is not None:
            diff = paired_difference(task_name, preds, same, refs, resamples=resamples)
            row.update(vs_dense=diff.estimate, vs_dense_low=diff.low, vs_dense_high=diff.high)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(records: Mapping[tuple, Mapping[str, Any]], pairs: Sequence[tuple[tuple, tuple]], task_name: str,
                 references: Sequence, resamples: int = 2000) -> pd.DataFrame:
    """The paired dev-score difference ``a - b`` of each ``(a, b)`` in ``pairs`` (each a ``(cell, method)``),
    seed by seed on the same examples, with its 95 % interval; a pair missing a side is left out."""
    rows = []
    for a, b in pairs:
        sides = []
        for cell, method in (a, b):
            found = {s: r["result"] for (c, m, s), r in records.items() if (c, m) == (cell, method)}
            if not found or not all(r.get("feasible", True) for r in found.values()):
                break
            sides.append(dict(sorted((s, r["predictions"]) for s, r in found.items())))
        if len(sides) < 2:
            continue
        diff = paired_difference(task_name, _one(sides[0]), _one(sides[1]), references, resamples=resamples)
        rows.append({"comparison": f"{_label(*a)} - {_label(*b)}", "difference": diff.estimate, "low": diff.low,
                     "high": diff.high, "seeds": diff.seeds, "paired_by": diff.paired_by})
    return pd.DataFrame(rows)
