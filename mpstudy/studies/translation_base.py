"""The seq2seq studies' starting model, the T5 trained from scratch on Multi30K, as a campaign unit.

No pre-trained encoder-decoder can be loaded here, so the seq2seq tracks (study 03's SVD + feature
distillation + KD, study 05's T5 head pruning) compress the T5 of :mod:`mpstudy.translation`. It is
trained once per (profile, seed) as one unit of the campaign beside the dense baselines
(``results/dense/units/<profile>-<task>-t5-<size>-seed<k>.json``): the record holds its test BLEU
with the interval over test sentences, the copy-the-source floor, the test predictions (so a
compressed model's BLEU is compared with the teacher's on the same sentences without the model),
the weights hash and the training's cost. The model itself is the record's artefact
(:mod:`mpstudy.studies.artefacts`), loaded only when a study needs to compress it.

The settings are :data:`mpstudy.profiles.TRANSLATION` (smoke: the tiny T5 on a few synthetic pairs;
cpu: the small T5 on the whole Multi30K training split, scored on test2016). From the shell::

    python -m mpstudy.studies.translation_base --profile cpu --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..cache import weights_hash
from ..campaign import Lazy, read_unit, unit
from ..models import load_model
from ..profiles import TRANSLATION
from ..stats import score_interval, trivial_score
from ..tasks import load_task, load_test_split, task_fingerprint
from ..train import predict
from ..translation import TRANSLATION_CONFIG, scratch_translation_model
from .artefacts import unit_model
from .dense import STUDY, DenseBaseline

__all__ = ["translation_settings", "translation_unit_name", "translation_spec", "translation_baseline", "main"]


def translation_settings(profile: str) -> dict[str, Any]:
    """The profile's block of :data:`~mpstudy.profiles.TRANSLATION` (task, size, rows, training fields)."""
    if profile not in TRANSLATION:
        raise ValueError(f"no scratch translation model is defined for profile {profile!r}; defined: {sorted(TRANSLATION)}")
    return TRANSLATION[profile]


def translation_unit_name(profile: str, seed: int) -> str:
    """``<profile>-<task>-t5-<size>-seed<k>``, beside the dense units."""
    s = translation_settings(profile)
    return f"{profile}-{s['task']}-t5-{s['size']}-seed{seed}"


def _load(profile: str, seed: int, data_dir: str | None):
    s = translation_settings(profile)
    # the rows are drawn with seed 0 whatever the training seed: every seed sees the same data
    task = load_task(s["task"], data_dir=data_dir, max_train=s["max_train"], max_eval=s["max_eval"], seed=0)
    config = replace(TRANSLATION_CONFIG, **s["train"], seed=seed)
    test = load_test_split(task, data_dir=data_dir, max_rows=s["test_rows"], seed=0) or task
    return s, task, config, test


def translation_spec(profile: str, seed: int, data_dir: str | None = None) -> dict[str, Any]:
    """What the unit computes: the recipe (size, vocabulary, training fields), the seed, the rows."""
    s, task, config, test = _load(profile, seed, data_dir)
    return {"profile": profile, "model": f"t5-{s['size']}", "task": s["task"], "seed": seed,
            "vocab_size": s["vocab_size"], "label_smoothing": s["label_smoothing"], "dropout": s["dropout"],
            "embedding_lr_scale": s["embedding_lr_scale"], "train": config.key_fields(),
            "data": task_fingerprint(task), "test": task_fingerprint(test) if test is not task else None}


def translation_baseline(seed: int = 0, profile: str = "cpu", data_dir: str | None = None,
                         results_dir: str | None = None, cache_dir: str | None = None,
                         resamples: int = 2000) -> DenseBaseline:
    """The scratch T5 unit of ``seed`` under ``profile``: recorded, or trained and scored now.

    Returns a :class:`~mpstudy.studies.dense.DenseBaseline` whose ``task`` scores on the test split
    (``task.dev`` is test2016 for Multi30K; the synthetic task has no test split and keeps its dev
    split), ``record["result"]`` holds ``metrics`` (BLEU), ``interval``, ``trivial`` (copy-the-source
    BLEU), ``predictions``/``references``/``sources`` (test, row order), ``weights``, ``steps``,
    ``validation_bleu``, ``train_cpu_seconds`` and ``train_wall_seconds``; ``model()`` gives
    ``(model, tokenizer)`` on first call only.
    """
    s, task, config, test = _load(profile, seed, data_dir)
    spec = translation_spec(profile, seed, data_dir)
    name = translation_unit_name(profile, seed)

    def fit():
        model, tokenizer, info = scratch_translation_model(
            seed=seed, size=s["size"], config=config, cache_dir=cache_dir, task=task, vocab_size=s["vocab_size"],
            label_smoothing=s["label_smoothing"], dropout=s["dropout"], embedding_lr_scale=s["embedding_lr_scale"])
        result = info["result"]
        kept = {"steps": result["steps"], "best_step": result["best_step"], "validation_bleu": info["dev_metrics"].get("bleu"),
                "train_cpu_seconds": info["cpu_seconds"], "train_wall_seconds": info["wall_seconds"],
                "torch_threads": info["torch_threads"], "params": info["params"]}
        return model, tokenizer, kept

    def make_model():
        recorded = read_unit(STUDY, name, spec, results_dir)
        return unit_model(name, spec, fit, lambda path: load_model(path, task=task),
                          weights=recorded["result"]["weights"] if recorded is not None else None, cache_dir=cache_dir)

    trained = Lazy(make_model)
    model = Lazy(lambda: trained()[:2])

    def compute() -> dict[str, Any]:
        t5, tokenizer = model()
        info = trained()[2]
        preds, refs = predict(t5, tokenizer, test, batch_size=config.eval_batch_size, max_length=config.max_length,
                              max_new_tokens=config.max_new_tokens, precision=config.precision)
        sources = [row["source"] for row in test.dev]
        metrics = test.compute_metrics(preds, refs)
        interval = score_interval(test.name, preds, refs, resamples=resamples, seed=seed)
        return {"metrics": metrics, "main_metric": test.main_metric, "interval": interval.as_dict(),
                "trivial": trivial_score(test.name, refs, sources=sources), "predictions": preds, "references": refs,
                "sources": sources, "weights": weights_hash(t5), "precision": config.precision,
                "train_rows": len(task.train), "test_rows": len(test.dev), **info}

    record = unit(STUDY, name, spec, compute, results_dir=results_dir)
    return DenseBaseline(record, model, test)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpstudy.studies.translation_base``: train and record the profile's scratch T5 seeds."""
    parser = argparse.ArgumentParser(prog="python -m mpstudy.studies.translation_base",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=sorted(TRANSLATION))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's seeds")
    parser.add_argument("--data-dir", default=None, help="folder with multi30k/ (default: $MPSTUDY_DATA)")
    parser.add_argument("--results-dir", default=None, help="default: $MPSTUDY_RESULTS, else results")
    args = parser.parse_args(argv)
    for seed in args.seeds or TRANSLATION[args.profile]["seeds"]:
        base = translation_baseline(seed, args.profile, args.data_dir, args.results_dir)
        r = base.record["result"]
        print(f"{base.record['unit']}: BLEU {base.interval} (copy-the-source {r['trivial']:.2f}), {r['steps']} steps, "
              f"{r['train_cpu_seconds'] / 3600:.2f} CPU-hours of training", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
