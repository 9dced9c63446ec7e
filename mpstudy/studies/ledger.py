"""The claims ledger: each paper's headline claims, the measurement of this study that tests each,
and a verdict computed from the results records (never typed by hand).

A :class:`Claim` names its paper, quotes (or closely paraphrases) the claim and says where it is
made; its ``check`` reads the study's records and returns a :class:`Finding`: the verdict, the
measured numbers in one line, and the rule that turned those numbers into the verdict. The rules
are written here, next to the claims, so a reader can disagree with a threshold in one place.

Verdicts: ``holds``, ``does not hold here``, ``not testable at this scale`` (the record exists but
cannot speak to the claim, e.g. too few seeds, or the claim is about a model or data set the
record's profile does not use) and ``not run`` (no record of that study yet).

Each study is judged on the records of one profile: the one asked for, else the largest present
(gpu over cpu over smoke). A smoke record (tiny random-init models on synthetic data) says nothing
about any claim: its checks still run (so a broken record still fails loudly), but ``holds`` and
``does not hold here`` become ``not testable at this scale``.
"""
from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import read_records

__all__ = ["Claim", "Finding", "CLAIMS", "VERDICTS", "PROFILE_ORDER", "PAPERS", "ledger", "verdict_counts"]

VERDICTS = ("holds", "does not hold here", "not testable at this scale", "not run")
PROFILE_ORDER = ("smoke", "cpu", "gpu")  #: from least to most telling

#: the sources of the claims, in the order of the studies: BibTeX key (book/references.bib) -> name
PAPERS = {
    "liu2021mpop": "MPOP (Liu et al., 2021)",
    "park2021lobert": "LoBERT (Park et al., 2021; code only)",
    "noach2020": "SVD + distillation (Noach & Goldberg, 2020)",
    "hsu2022fwsvd": "Fisher-weighted SVD (Hsu et al., 2022)",
    "banaei2023": "Offline compression (Banaei et al., 2023)",
    "composability2023": "Composable pruning (UMass Amherst thesis, 2023)",
}

#: thresholds shared by several rules (dev-score points are fractions: 0.01 = 1 point)
COMPARABLE = 0.01  #: "comparable", "on par": a mean within 1 point
MINIMAL_LOSS = 0.02  #: "minimal loss", "keeps the quality": a mean within 2 points
BEATS = 0.005  #: "beats", "helps": a mean higher by more than half a point


@dataclass(frozen=True)
class Finding:
    """What the records say about one claim."""

    verdict: str
    measured: str
    rule: str
    scale: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Claim:
    """One headline claim and how the study tests it."""

    paper: str  #: BibTeX key of the source (book/references.bib), a paper, a thesis or a repository
    claim: str  #: the claim, quoted or closely paraphrased
    source: str  #: where the claim is made
    study: str  #: the study (results folder) whose records test it
    check: Callable[[list[dict[str, Any]]], Finding]


def _scale(record: dict[str, Any]) -> str:
    prov = record.get("provenance", {})
    params = record.get("parameters", {})
    rows = prov.get("train_rows") or params.get("max_train")
    seeds = params.get("seeds") or params.get("finetune_seeds") or [params.get("seed", prov.get("seed"))]
    return (f"{prov.get('profile', '?')} profile: {params.get('model', prov.get('model', '?'))} on "
            f"{params.get('task', prov.get('task', '?'))}, {rows} training rows, {len(seeds)} seed(s)")


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def _profile(record: dict[str, Any]) -> str:
    return record.get("provenance", {}).get("profile", "?")


def _pts(x: float) -> str:
    """A difference of scores in points."""
    return f"{100 * x:+.1f} pts"


# --------------------------------------------------------------------------- MPOP (study 01)


def _mpop_fewer_trained(records: list[dict[str, Any]]) -> Finding:
    rule = "holds if the lightweight variant trains no more than 11 % of the dense model's parameters (claim: 9 %, +2 points)"
    runs = records[-1]["runs"]
    dense = next(r for r in runs if r["variant"] == "dense")
    light = [r for r in runs if r["variant"] == "MPO lightweight"]
    share = light[0]["trainable"] / dense["stored"]
    verdict = "holds" if share <= 0.11 else "does not hold here"
    return Finding(verdict, f"lightweight MPO trains {light[0]['trainable']:,} of {dense['stored']:,} parameters "
                            f"({share:.1%}; {1 - share:.1%} fewer)", rule, _scale(records[-1]))


def _mpop_light_matches_full(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if the mean dev score of lightweight fine-tuning is within 1 point of full fine-tuning of the same "
            "MPO model, or above it; needs 2+ seeds")
    runs = records[-1]["runs"]
    by = {v: [r["score"] for r in runs if r["variant"] == v] for v in ("MPO full", "MPO lightweight", "dense")}
    if len(by["MPO lightweight"]) < 2:
        return Finding("not testable at this scale", f"one seed: lightweight {by['MPO lightweight'][0]:.3f}, "
                       f"full {by['MPO full'][0]:.3f}", rule, _scale(records[-1]))
    light, full = _mean(by["MPO lightweight"]), _mean(by["MPO full"])
    spread = statistics.stdev(by["MPO lightweight"])
    verdict = "holds" if light >= full - 0.01 else "does not hold here"
    return Finding(verdict, f"lightweight {light:.3f} (sd {spread:.3f}) vs full {full:.3f}, dense {_mean(by['dense']):.3f}, "
                            f"over {len(by['MPO lightweight'])} seeds", rule, _scale(records[-1]))


def _mpop_squeeze(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if dimension squeezing accepts at least one cut that removes parameters (a cut is accepted only "
            "if the dev score after its short fine-tune stays within the run's tolerance of the score before)")
    steps = [s for s in records[-1].get("squeeze", []) if s.get("cut", 0) > 0]  # cut 0 is the starting point
    accepted = [s for s in steps if s.get("accepted")]
    if not steps:
        return Finding("not run", "no squeezing trajectory in the record", rule, _scale(records[-1]))
    start = next(r["stored"] for r in records[-1]["runs"] if r["variant"] == "MPO lightweight")
    end = int(accepted[-1]["stored"]) if accepted else start
    verdict = "holds" if accepted and end < start else "does not hold here"
    return Finding(verdict, f"{len(accepted)} of {len(steps)} cuts accepted; stored parameters {start:,} -> {end:,} "
                            f"({start - end:,} fewer)", rule, _scale(records[-1]))


def _mpop_on_par_with_dense(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if the mean dev score of the MPO model with lightweight fine-tuning is within 1 point of the dense "
            "model fine-tuned by the same recipe, or above it; needs 2+ seeds")
    runs = records[-1]["runs"]
    light = [r["score"] for r in runs if r["variant"] == "MPO lightweight"]
    dense = [r["score"] for r in runs if r["variant"] == "dense"]
    if len(light) < 2:
        return Finding("not testable at this scale", f"one seed: lightweight {light[0]:.3f}, dense {dense[0]:.3f}", rule,
                       _scale(records[-1]))
    gap = _mean(light) - _mean(dense)
    verdict = "holds" if gap >= -COMPARABLE else "does not hold here"
    return Finding(verdict, f"lightweight MPO {_mean(light):.3f} vs dense {_mean(dense):.3f} ({_pts(gap)}) over "
                            f"{len(light)} seeds", rule, _scale(records[-1]))


#: the paper's dev scores of MPOP on ALBERT-base-v2 that the digest could find (secondary sources, unverified)
MPOP_ALBERT_DEV = {"sst2": 0.930}


def _mpop_albert_numbers(records: list[dict[str, Any]]) -> Finding:
    rule = ("testable only on albert-base-v2 with the full training split of a task whose paper score is known "
            f"({', '.join(f'{t} {v:.3f}' for t, v in MPOP_ALBERT_DEV.items())}); holds if the lightweight MPO model's "
            "mean dev score is within 1 point of it")
    record = records[-1]
    params = record.get("parameters", {})
    model, task = str(params.get("model")), params.get("task")
    light = [r["score"] for r in record["runs"] if r["variant"] == "MPO lightweight"]
    if "albert" not in model or params.get("max_train") is not None or task not in MPOP_ALBERT_DEV:
        return Finding("not testable at this scale",
                       f"this record is {model} on {params.get('max_train') or 'all'} training rows of {task} "
                       f"(lightweight MPO {_mean(light):.3f}); the paper's numbers need albert-base-v2 on the full "
                       "GLUE training split (the gpu profile)", rule, _scale(record))
    gap = _mean(light) - MPOP_ALBERT_DEV[task]
    verdict = "holds" if gap >= -COMPARABLE else "does not hold here"
    return Finding(verdict, f"lightweight MPO {_mean(light):.3f} vs the paper's {MPOP_ALBERT_DEV[task]:.3f} on {task} "
                            f"({_pts(gap)})", rule, _scale(record))


# --------------------------------------------------------------------------- LoBERT (study 02)


def _lobert_main_means(record: dict[str, Any]) -> tuple[dict[str, float], int]:
    """Mean score per mode of the main grid (default budget, KD + PKD, pre-trained start), and the seed count."""
    main = [r for r in record["runs"] if r.get("part") == "main" and r.get("budget") == "default"
            and r.get("loss") == "kd+pkd" and r.get("init") == "pretrained" and r.get("fit") == "svd"]
    modes = dict.fromkeys(r["mode"] for r in main)
    means = {m: _mean([r["score"] for r in main if r["mode"] == m]) for m in modes}
    return means, len({r["seed"] for r in main})


def _lobert_half(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if the demo's student (self_svd at its default budget) keeps between 45 % and 55 % of the weights "
            "it replaces (the claim: 'compression rate is 50 % by default'); the whole model's ratio is reported beside")
    rows = [d for d in records[-1]["decompositions"] if d["mode"] == "self_svd" and d["budget"] == "default"
            and d.get("fit", "svd") == "svd"]
    if not rows:
        return Finding("not testable at this scale", "the record has no self_svd student at the default budget", rule,
                       _scale(records[-1]))
    kept, whole = rows[0]["kept"], rows[0]["param_ratio"]
    verdict = "holds" if 0.45 <= kept <= 0.55 else "does not hold here"
    return Finding(verdict, f"self_svd keeps {kept:.1%} of the query/key/value weights, {whole:.1%} of the whole "
                            "model's stored parameters", rule, _scale(records[-1]))


def _lobert_keeps_quality(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if at least half of the student modes, each at its default budget and trained with KD + PKD, score "
            "within 2 points of the dense student trained by the same recipe (means over 2+ seeds)")
    means, seeds = _lobert_main_means(records[-1])
    dense = means.pop("dense")
    kept = [m for m, v in means.items() if v >= dense - MINIMAL_LOSS]
    worst = min(means, key=means.get)
    measured = (f"{len(kept)} of {len(means)} modes within 2 points of the dense student ({dense:.3f}): "
                f"{', '.join(f'{m} {_pts(means[m] - dense)}' for m in kept) or 'none'}; worst {worst} "
                f"{_pts(means[worst] - dense)}")
    if seeds < 2:
        return Finding("not testable at this scale", f"one seed; {measured}", rule, _scale(records[-1]))
    verdict = "holds" if len(kept) >= len(means) / 2 else "does not hold here"
    return Finding(verdict, measured + f"; {seeds} seeds", rule, _scale(records[-1]))


def _lobert_pkd_helps(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, for most ablation modes, KD + PKD beats KD alone by more than 0.5 points (means over 2+ "
            "ablation seeds, students factorized from the pre-trained model)")
    runs = records[-1]["runs"]
    kd = [r for r in runs if r.get("part") == "loss" and r["loss"] == "kd"]
    seeds = sorted({r["seed"] for r in kd})
    diffs = {}
    for mode in dict.fromkeys(r["mode"] for r in kd):
        with_pkd = [r["score"] for r in runs if r.get("part") == "main" and r["mode"] == mode and r["seed"] in seeds]
        diffs[mode] = _mean(with_pkd) - _mean([r["score"] for r in kd if r["mode"] == mode])
    measured = "KD + PKD minus KD: " + ", ".join(f"{m} {_pts(d)}" for m, d in diffs.items())
    if len(seeds) < 2:
        return Finding("not testable at this scale", f"{measured}, over {len(seeds)} ablation seed(s); needs 2+ "
                       "(the gpu profile runs 3)", rule, _scale(records[-1]))
    wins = sum(d > BEATS for d in diffs.values())
    verdict = "holds" if wins > len(diffs) / 2 else "does not hold here"
    return Finding(verdict, f"{measured}, over {len(seeds)} seeds", rule, _scale(records[-1]))


# --------------------------------------------------------------------------- Noach & Goldberg, FWSVD (study 03)


def _svd_means(record: dict[str, Any]) -> tuple[dict[tuple[str, str], float], int]:
    """Mean score per (method, plan) of the recovery grid at the budget, and the number of seeds."""
    grid = record["grid"]
    cells = dict.fromkeys((r["method"], r["plan"]) for r in grid)
    means = {c: _mean([r["score"] for r in grid if (r["method"], r["plan"]) == c]) for c in cells}
    trained = [r for r in grid if r["plan"] != "none"]
    return means, len({r["seed"] for r in trained})


def _original_score(record: dict[str, Any]) -> float:
    """The fine-tuned original's score in the grid's metric (the one whose value equals ``score`` in a grid row)."""
    metrics = record["baseline"]["metrics"]
    if len(metrics) == 1:
        return next(iter(metrics.values()))
    row = record["grid"][0]
    return metrics[next(k for k in metrics if row.get(k) == row["score"])]


def _paper_budget(record: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in record["budget"] if "paper" in str(b["model"]))


def _ng_minimal_loss(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if SVD followed by feature distillation then KD (the paper's recipe) scores within 2 points of the "
            "fine-tuned original, at the study's budget (means over 2+ seeds)")
    record = records[-1]
    means, seeds = _svd_means(record)
    original, ours, paper = _original_score(record), record["budget"][0], _paper_budget(record)
    gap = means[("svd", "fd+kd")] - original
    measured = (f"SVD + FD + KD {means[('svd', 'fd+kd')]:.3f} vs original {original:.3f} ({_pts(gap)}); rank "
                f"{ours['rank']} keeps {ours['targeted matrices kept']:.1%} of the factorized weights, "
                f"{ours['whole model kept']:.1%} of the model (the paper's r = {paper['rank']}: "
                f"{paper['targeted matrices kept']:.1%} and {paper['whole model kept']:.1%} of BERT-base)")
    if seeds < 2:
        return Finding("not testable at this scale", f"one seed; {measured}", rule, _scale(record))
    verdict = "holds" if gap >= -MINIMAL_LOSS else "does not hold here"
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, _scale(record))


def _ng_speedup(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if the factorized model, at the paper's kept fraction of the factorized weights (linearly "
            "interpolated between the measured ranks), runs at least 1.3x as fast as the original (the claimed 1.45x "
            "less 10 % for timing noise)")
    record = records[-1]
    paper = _paper_budget(record)
    target = paper["targeted matrices kept"]
    curve = sorted(record["latency"], key=lambda r: r["kept_fraction"])
    kept = [r["kept_fraction"] for r in curve]
    if len(curve) < 2 or not kept[0] <= target <= kept[-1]:
        span = f"{kept[0]:.2f}..{kept[-1]:.2f}" if curve else "nothing"
        return Finding("not testable at this scale", f"the latency curve spans kept fractions {span}, not the paper's "
                       f"{target:.2f}", rule, _scale(record))
    i = next(k for k in range(1, len(curve)) if kept[k] >= target) if target > kept[0] else 1
    lo, hi = curve[i - 1], curve[i]
    w = (target - lo["kept_fraction"]) / (hi["kept_fraction"] - lo["kept_fraction"])
    speedup = lo["speedup"] + w * (hi["speedup"] - lo["speedup"])
    verdict = "holds" if speedup >= 1.45 * 0.9 else "does not hold here"
    return Finding(verdict, f"{speedup:.2f}x at kept {target:.2f} (between rank {lo['rank']}: {lo['speedup']:.2f}x and "
                            f"rank {hi['rank']}: {hi['speedup']:.2f}x); claimed 1.45x", rule, _scale(record))


def _ng_fd_then_kd(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, for plain SVD at the budget, FD then KD beats KD alone by more than 0.5 points (means over "
            "2+ seeds; FD then KD trains twice the steps)")
    record = records[-1]
    means, seeds = _svd_means(record)
    gain = means[("svd", "fd+kd")] - means[("svd", "kd")]
    measured = (f"FD then KD {means[('svd', 'fd+kd')]:.3f} vs KD {means[('svd', 'kd')]:.3f} ({_pts(gain)}); FD "
                f"alone {means[('svd', 'fd')]:.3f}")
    if seeds < 2:
        return Finding("not testable at this scale", f"one seed; {measured}", rule, _scale(record))
    verdict = "holds" if gain > BEATS else "does not hold here"
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, _scale(record))


def _ng_seq2seq(records: list[dict[str, Any]]) -> Finding:
    rule = ("testable only with BLEU rows of a pre-trained encoder-decoder (not a tiny random-init model); holds if "
            "FD then KD is within 1 BLEU point of the original")
    record = records[-1]
    params, s2s = record.get("parameters", {}), record.get("seq2seq", {})
    model, task, rows = str(params.get("s2s_model")), params.get("s2s_task"), s2s.get("rows") or []
    if not rows or model.startswith("tiny-"):
        probe = s2s.get("probe") or {}
        timing = (f"; one training epoch would take {probe['epoch_seconds']:.0f} s here" if probe.get("epoch_seconds")
                  else "")
        return Finding("not testable at this scale",
                       f"seq2seq {params.get('s2s_mode')} on {model} / {task}: {len(rows)} BLEU rows{timing}; needs "
                       "the gpu profile (Helsinki-NLP/opus-mt-en-de on Multi30K)", rule, _scale(record))
    bleu = {r["plan"]: r["bleu"] for r in rows}
    gap = bleu["fd+kd"] - bleu["original"]
    verdict = "holds" if gap >= -1.0 else "does not hold here"
    return Finding(verdict, f"{model} on {task}: BLEU {bleu['original']:.1f} -> {bleu['none']:.1f} factorized -> "
                            f"{bleu['fd+kd']:.1f} after FD then KD", rule, _scale(record))


def _fwsvd_untrained(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, without any training, FWSVD scores more than 0.5 points above plain SVD at the same rank at most "
            "of the budgets swept (no recovery is deterministic: one run per budget)")
    sweep = [r for r in records[-1]["sweep"] if r["plan"] == "none"]
    ranks = sorted({r["rank"] for r in sweep})
    score = {(r["method"], r["rank"]): r["score"] for r in sweep}
    diffs = {k: score[("fwsvd", k)] - score[("svd", k)] for k in ranks if ("fwsvd", k) in score and ("svd", k) in score}
    wins = sum(d > BEATS for d in diffs.values())
    verdict = "holds" if diffs and wins > len(diffs) / 2 else "does not hold here"
    return Finding(verdict, f"FWSVD minus SVD, untrained, at ranks {', '.join(map(str, diffs))}: "
                            f"{', '.join(_pts(d) for d in diffs.values())}", rule, _scale(records[-1]))


def _fwsvd_after_recovery(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, after FD then KD at the budget, FWSVD's mean score exceeds plain SVD's (means over 2+ seeds)")
    means, seeds = _svd_means(records[-1])
    gap = means[("fwsvd", "fd+kd")] - means[("svd", "fd+kd")]
    measured = f"FWSVD {means[('fwsvd', 'fd+kd')]:.3f} vs SVD {means[('svd', 'fd+kd')]:.3f} ({_pts(gap)})"
    if seeds < 2:
        return Finding("not testable at this scale", f"one seed; {measured}", rule, _scale(records[-1]))
    verdict = "holds" if gap > 0 else "does not hold here"
    return Finding(verdict, f"{measured}; {seeds} seeds", rule, _scale(records[-1]))


COMPACT_PARAMS = 30_000_000  #: a model below this many stored parameters counts as "already compact" (BERT-base: 110M)


def _fwsvd_compact(records: list[dict[str, Any]]) -> Finding:
    rule = ("testable on an already compact model (< 30M stored parameters); holds if some budget of FWSVD + FD + KD "
            "removes at least 9 % of the model's parameters within 1 point of the original (the sweep: first seed)")
    record = records[-1]
    dense = record["baseline"]["params"]["stored"]
    original = _original_score(record)
    if dense >= COMPACT_PARAMS:
        return Finding("not testable at this scale", f"{record.get('parameters', {}).get('model')} has {dense / 1e6:.0f}M "
                       "parameters: not a compact model (the cpu profile's all-MiniLM-L6-v2, 23M, is)", rule,
                       _scale(record))
    rows = sorted((r for r in record["sweep"] if r["method"] == "fwsvd" and r["plan"] == "fd+kd"),
                  key=lambda r: r["model_params"])
    points = [(1 - r["model_params"] / dense, r["score"] - original) for r in rows]
    good = [cut for cut, gap in points if gap >= -COMPARABLE]
    verdict = "holds" if good and max(good) >= 0.09 else "does not hold here"
    return Finding(verdict, f"original {original:.3f}, {dense / 1e6:.1f}M parameters; FWSVD + FD + KD: "
                            + ", ".join(f"{cut:.0%} fewer {_pts(gap)}" for cut, gap in points), rule, _scale(record))


# --------------------------------------------------------------------------- offline compression (study 04)


def _offline_frames(records):
    import pandas as pd

    grid = pd.DataFrame(records[-1]["grid"])
    return grid[grid.feasible]


def _offline_ae_beats(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most (module, CR, mode) cells, the autoencoder's sentence-embedding cosine to the "
            "uncompressed model exceeds the best of Kronecker, Tucker and SVD by more than 0.001")
    grid = _offline_frames(records)
    means = grid.groupby(["module", "cr", "mode", "method"])["sentence_cosine"].mean().unstack("method")
    factor = [m for m in ("kronecker", "tucker", "svd") if m in means.columns]
    cells = means.dropna(subset=["ae", *factor])
    wins = int((cells["ae"] > cells[factor].max(axis=1) + 0.001).sum())
    verdict = "holds" if wins > len(cells) / 2 else "does not hold here"
    return Finding(verdict, f"the autoencoder wins {wins} of {len(cells)} cells on sentence-embedding cosine",
                   rule, _scale(records[-1]))


def _offline_joint_helps(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most (module, CR, method) cells of the per-layer module types, compressing all layers "
            "together beats compressing each layer separately on sentence-embedding cosine by more than 0.001")
    grid = _offline_frames(records)
    means = grid.groupby(["module", "cr", "method", "mode"])["sentence_cosine"].mean().unstack("mode")
    cells = means.dropna(subset=["separated", "concatenated"]) if "concatenated" in means else means.iloc[:0]
    wins = int((cells["concatenated"] > cells["separated"] + 0.001).sum()) if len(cells) else 0
    verdict = "holds" if len(cells) and wins > len(cells) / 2 else "does not hold here"
    return Finding(verdict, f"concatenated beats separated in {wins} of {len(cells)} cells", rule, _scale(records[-1]))


def _offline_ae_finetuned(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most fine-tuned (module, CR, mode) cells, the autoencoder-compressed model's mean dev score "
            "after fine-tuning exceeds the best of Kronecker, Tucker and SVD (means over 2+ seeds)")
    rows = [r for r in records[-1].get("finetuned", []) if r["method"] != "dense"]
    cells = dict.fromkeys((r["module"], r["cr"], r["mode"]) for r in rows)
    seeds = len({r["seed"] for r in rows})
    parts, wins = [], 0
    for cell in cells:
        means = {m: _mean([r["score"] for r in rows if (r["module"], r["cr"], r["mode"]) == cell and r["method"] == m])
                 for m in {r["method"] for r in rows if (r["module"], r["cr"], r["mode"]) == cell}}
        factor = [means[m] for m in ("kronecker", "tucker", "svd") if m in means]
        if "ae" not in means or not factor:
            continue
        wins += means["ae"] > max(factor)
        parts.append(f"{cell[0]} CR {cell[1]} {cell[2]}: AE {means['ae']:.3f} vs best factorization {max(factor):.3f}")
    if not parts:
        return Finding("not testable at this scale", "no fine-tuned cell with the autoencoder and a factorization",
                       rule, _scale(records[-1]))
    if seeds < 2:
        return Finding("not testable at this scale", f"one seed; {'; '.join(parts)}", rule, _scale(records[-1]))
    verdict = "holds" if wins > len(parts) / 2 else "does not hold here"
    return Finding(verdict, f"AE wins {wins} of {len(parts)} cells ({'; '.join(parts)}), {seeds} seeds", rule,
                   _scale(records[-1]))


def _offline_perplexity(records: list[dict[str, Any]]) -> Finding:
    rule = ("testable only if the record has a masked-LM perplexity per cell; holds if the autoencoder's perplexity is "
            "below the best of Kronecker, Tucker and SVD in most (module, CR, mode) cells")
    record = records[-1]
    grid = [r for r in record["grid"] if r.get("feasible", True)]
    scored = [r for r in grid if r.get("perplexity") is not None]
    if not scored:
        return Finding("not testable at this scale",
                       f"no perplexity in the record: {record.get('parameters', {}).get('model')} is scored by the "
                       "cosine of its sentence embeddings instead; the claim needs an MLM-headed model (bert-base-uncased) "
                       "and WikiText-103", rule, _scale(record))
    cells = dict.fromkeys((r["module"], r["cr"], r["mode"]) for r in scored)
    wins = total = 0
    for cell in cells:
        ppl = {}
        for r in scored:
            if (r["module"], r["cr"], r["mode"]) == cell:
                ppl.setdefault(r["method"], []).append(r["perplexity"])
        factor = [_mean(ppl[m]) for m in ("kronecker", "tucker", "svd") if m in ppl]
        if "ae" in ppl and factor:
            total += 1
            wins += _mean(ppl["ae"]) < min(factor)
    verdict = "holds" if total and wins > total / 2 else "does not hold here"
    return Finding(verdict, f"the autoencoder has the lowest perplexity in {wins} of {total} cells", rule, _scale(record))


# --------------------------------------------------------------------------- composability (study 05)


def _faster_configs(runs: list[dict[str, Any]]) -> tuple[int, int]:
    """Configurations where composability reaches the target first (module tuning share counted), and their number."""
    configs = sorted({r["config"] for r in runs})
    faster = 0
    for c in configs:
        comp = next(r for r in runs if r["config"] == c and r["arm"] == "composability")
        base = next(r for r in runs if r["config"] == c and r["arm"] == "baseline")
        t_comp, t_base = comp.get("total_seconds_to_target"), base.get("total_seconds_to_target")
        if t_comp is not None and (t_base is None or t_comp < t_base):
            faster += 1
    return faster, len(configs)


def _composability_faster(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most configurations, composing from tuned modules reaches the target dev score in less "
            "training time than the baseline, counting its share of the module-level tuning")
    faster, n = _faster_configs(records[-1]["tracks"]["cls"]["runs"])
    verdict = "holds" if faster > n / 2 else "does not hold here"
    return Finding(verdict, f"composability reaches the target first in {faster} of {n} configurations",
                   rule, _scale(records[-1]))


def _composability_start(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most configurations, the model composed from tuned modules starts model-level fine-tuning "
            "more than 1 point above the one composed from untuned pruned modules")
    runs = records[-1]["tracks"]["cls"]["runs"]
    start = {(r["config"], r["arm"]): r["start_score"] for r in runs}
    configs = sorted({r["config"] for r in runs})
    gains = [start[(c, "composability")] - start[(c, "baseline")] for c in configs]
    wins = sum(g > COMPARABLE for g in gains)
    verdict = "holds" if wins > len(configs) / 2 else "does not hold here"
    return Finding(verdict, f"starting dev score, tuned minus untuned modules: {', '.join(_pts(g) for g in gains)}",
                   rule, _scale(records[-1]))


def _composability_t5(records: list[dict[str, Any]]) -> Finding:
    rule = ("testable only on the seq2seq track with t5-small on Multi30K (the thesis' setting); holds if, in most "
            "configurations, composability reaches the target BLEU in less training time, tuning share counted")
    track = records[-1].get("tracks", {}).get("s2s")
    if not track:
        return Finding("not testable at this scale", "the record has no seq2seq track; needs the gpu profile "
                       "(t5-small on Multi30K)", rule, _scale(records[-1]))
    if "t5-small" not in str(track["model"]) or track["task"] != "multi30k":
        return Finding("not testable at this scale",
                       f"the seq2seq track ran {track['model']} on {track['task']} (dense BLEU "
                       f"{track['dense']['score']:.1f}); needs the gpu profile (t5-small on Multi30K)", rule,
                       _scale(records[-1]))
    faster, n = _faster_configs(track["runs"])
    verdict = "holds" if faster > n / 2 else "does not hold here"
    return Finding(verdict, f"composability reaches the target BLEU first in {faster} of {n} configurations", rule,
                   _scale(records[-1]))


# --------------------------------------------------------------------------- re-tested on the comparison (study 06)


def _comparison_scale(record: dict[str, Any]) -> str:
    params = record.get("parameters", {})
    return (f"{_profile(record)} profile: {params.get('model', '?')} on {', '.join(params.get('tasks', []))}, "
            f"{params.get('max_train')} training rows per task, budgets {params.get('keeps')}, no recovery")


def _untrained_cells(record: dict[str, Any]) -> dict[tuple[str, float], dict[str, float]]:
    """(task, keep) -> method -> dev score of the compressed model before any recovery."""
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for run in record["runs"]:
        if run["regime"] == "none":
            cells.setdefault((run["task"], run["keep"]), {})[run["method"]] = run["score"]
    return cells


def _wins_over(record: dict[str, Any], method: str, rivals: Sequence[str]) -> tuple[int, int, int]:
    """Cells where ``method`` beats the best rival by more than :data:`BEATS`, informative cells (all scores
    not tied within 0.001), and all cells holding ``method`` and a rival."""
    wins = informative = total = 0
    for scores in _untrained_cells(record).values():
        present = [scores[r] for r in rivals if r in scores]
        if method not in scores or not present:
            continue
        total += 1
        if max(present + [scores[method]]) - min(present + [scores[method]]) <= 0.001:
            continue  # everything at the same score (e.g. the majority class): says nothing
        informative += 1
        wins += scores[method] > max(present) + BEATS
    return wins, informative, total


def _comparison_ae_beats(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, untrained, the autoencoder beats the best of SVD, Tucker and Kronecker by more than half a point "
            "in most informative (task, budget) cells of the comparison (cells where all tie within 0.001 are left out)")
    wins, informative, total = _wins_over(records[-1], "autoencoder", ("svd", "tucker", "kronecker"))
    verdict = "holds" if informative and wins > informative / 2 else "does not hold here"
    return Finding(verdict, f"the autoencoder wins {wins} of {informative} informative cells ({total} in all), "
                            "whole encoder compressed, every GLUE task of the comparison", rule,
                   _comparison_scale(records[-1]))


def _comparison_fwsvd_beats(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, untrained, Fisher-weighted SVD beats plain SVD at the same ranks by more than half a point in "
            "most informative (task, budget) cells of the comparison (cells where both tie within 0.001 are left out)")
    wins, informative, total = _wins_over(records[-1], "fwsvd", ("svd",))
    verdict = "holds" if informative and wins > informative / 2 else "does not hold here"
    return Finding(verdict, f"FWSVD wins {wins} of {informative} informative cells ({total} in all), every GLUE task "
                            "of the comparison", rule, _comparison_scale(records[-1]))


CLAIMS: list[Claim] = [
    Claim("liu2021mpop", "Lightweight fine-tuning reduces the fine-tuned parameters by 91 % on average.", "abstract",
          "01_mpop", _mpop_fewer_trained),
    Claim("liu2021mpop", "Fine-tuning only the auxiliary tensors performs comparably to fine-tuning the whole MPO "
          "model.", "abstract", "01_mpop", _mpop_light_matches_full),
    Claim("liu2021mpop", "Dimension squeezing reduces the parameters further at little cost in quality.", "abstract",
          "01_mpop", _mpop_squeeze),
    Claim("liu2021mpop", "The MPO-compressed model with lightweight fine-tuning performs on par with the fine-tuned "
          "original.", "abstract, Tables 2-3", "01_mpop", _mpop_on_par_with_dense),
    Claim("liu2021mpop", "On ALBERT-base-v2, MPOP reaches GLUE dev scores like SST-2 93.0.",
          "Tables 2-3 as quoted by secondary sources (unverified)", "01_mpop", _mpop_albert_numbers),
    Claim("park2021lobert", "The default compression rate is 50 %.", "README (demo)", "02_lobert", _lobert_half),
    Claim("park2021lobert", "Low-rank factorized students (SVD, Tucker, FALCON) trained with KD + PKD keep BERT's quality.",
          "README (the project's premise; no results published)", "02_lobert", _lobert_keeps_quality),
    Claim("park2021lobert", "The patience loss (PKD) helps the factorized student beyond KD.",
          "code (PKD-based training; no results published)", "02_lobert", _lobert_pkd_helps),
    Claim("noach2020", "SVD followed by feature distillation and KD shrinks the model (0.4x fewer parameters) with "
          "minimal loss in metric performance.", "abstract", "03_svd_distillation", _ng_minimal_loss),
    Claim("noach2020", "The factorized model is 1.45x faster at inference.", "abstract", "03_svd_distillation",
          _ng_speedup),
    Claim("noach2020", "Feature distillation before KD recovers more than KD alone.", "abstract (the two-stage recipe)",
          "03_svd_distillation", _ng_fd_then_kd),
    Claim("noach2020", "The recipe compresses a MarianMT translation model with little BLEU loss.",
          "the kene111/matrix-decomposition port (not the paper)", "03_svd_distillation", _ng_seq2seq),
    Claim("hsu2022fwsvd", "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain SVD.",
          "abstract (before fine-tuning)", "03_svd_distillation", _fwsvd_untrained),
    Claim("hsu2022fwsvd", "FWSVD's advantage over SVD persists after recovery training.", "abstract",
          "03_svd_distillation", _fwsvd_after_recovery),
    Claim("hsu2022fwsvd", "An already compact model loses 9 % to 30 % of its parameters with an insignificant impact "
          "on accuracy.", "abstract", "03_svd_distillation", _fwsvd_compact),
    Claim("banaei2023", "The autoencoder significantly outperforms the factorizations offline.", "abstract",
          "04_offline", _offline_ae_beats),
    Claim("banaei2023", "Compressing a module type of all layers jointly helps.", "abstract", "04_offline",
          _offline_joint_helps),
    Claim("banaei2023", "The autoencoder's advantage carries over to downstream tasks after fine-tuning.", "abstract",
          "04_offline", _offline_ae_finetuned),
    Claim("banaei2023", "The autoencoder gives a lower masked-LM perplexity than the factorizations.",
          "Tables (BERT-base, WikiText-103)", "04_offline", _offline_perplexity),
    Claim("composability2023", "Module-level fine-tuning done once per shared module speeds up reaching the quality "
          "of each pruning configuration.", "README / thesis abstract", "05_composability", _composability_faster),
    Claim("composability2023", "Pre-tuned modules give each composed configuration a better starting point than untuned "
          "pruned modules.", "README (block-level fine-tuning)", "05_composability", _composability_start),
    Claim("composability2023", "On T5-small and Multi30K, composability reaches the target BLEU sooner.",
          "thesis abstract, README", "05_composability", _composability_t5),
    Claim("hsu2022fwsvd", "Fisher-weighted SVD keeps the task accuracy much closer to the original than plain SVD.",
          "abstract; re-tested on every task and budget of the comparison", "06_comparison", _comparison_fwsvd_beats),
    Claim("banaei2023", "The autoencoder significantly outperforms the factorizations offline.",
          "abstract; re-tested on the whole encoder, every task and budget of the comparison", "06_comparison",
          _comparison_ae_beats),
]


def _of_profile(records: list[dict[str, Any]], profile: str | None) -> list[dict[str, Any]]:
    """The records of ``profile``, else those of the most telling profile present (gpu, cpu, smoke)."""
    if profile is not None:
        return [r for r in records if _profile(r) == profile]
    rank = {p: i for i, p in enumerate(PROFILE_ORDER)}
    best = max((rank.get(_profile(r), -1) for r in records), default=None)
    return [r for r in records if rank.get(_profile(r), -1) == best]


def ledger(results_dir: str | os.PathLike | None = None, claims: Sequence[Claim] = CLAIMS,
           profile: str | None = None):
    """One row per claim: paper, claim, source, study, verdict, measured, rule, scale (a DataFrame).

    ``results_dir`` defaults to ``$MPSTUDY_RESULTS``, else ``results``. Each study is judged on the
    records of ``profile`` (None: the most telling profile it has, gpu over cpu over smoke). A study
    without such records gives ``not run``; a check that cannot read its record fails loudly (a
    broken record is a bug). On a smoke record, ``holds`` and ``does not hold here`` become ``not
    testable at this scale``.
    """
    import pandas as pd

    if profile is not None and profile not in PROFILE_ORDER:
        raise ValueError(f"profile must be one of {PROFILE_ORDER} or None, got {profile!r}")
    root = Path(results_dir or os.environ.get("MPSTUDY_RESULTS", "results"))
    rows = []
    for claim in claims:
        records = _of_profile(read_records(root, claim.study), profile)
        if not records:
            finding = Finding("not run", "no record" + (f" of the {profile} profile" if profile else ""), "", "")
        else:
            finding = claim.check(records)
            if _profile(records[-1]) == "smoke" and finding.verdict in ("holds", "does not hold here"):
                finding = Finding("not testable at this scale", f"{finding.measured} (would read: {finding.verdict})",
                                  "smoke profile: tiny random-init models on synthetic data test the code, not the "
                                  f"claim; run the cpu or gpu profile. The rule: {finding.rule}", finding.scale)
        rows.append({"paper": claim.paper, "claim": claim.claim, "source": claim.source, "study": claim.study,
                     "verdict": finding.verdict, "measured": finding.measured, "rule": finding.rule,
                     "scale": finding.scale})
    return pd.DataFrame(rows)


def verdict_counts(table) -> Any:
    """How many claims of each paper got each verdict: one row per paper (in :data:`PAPERS` order), one column per
    verdict (in :data:`VERDICTS` order), and the total."""
    import pandas as pd

    counts = pd.crosstab(table["paper"], table["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    counts = counts.reindex([p for p in PAPERS if p in counts.index] + [p for p in counts.index if p not in PAPERS])
    counts["claims"] = counts.sum(axis=1)
    counts.index = [PAPERS.get(p, p) for p in counts.index]
    counts.index.name = "paper"
    counts.columns.name = None
    return counts
