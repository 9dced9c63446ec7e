"""The claims ledger: each paper's headline claims, the measurement of this study that tests each,
and a verdict computed from the results records (never typed by hand).

A :class:`Claim` names its paper, quotes (or closely paraphrases) the claim and says where it is
made; its ``check`` reads the study's records and returns a :class:`Finding`: the verdict, the
measured numbers in one line, and the rule that turned those numbers into the verdict. The rules
are written here, next to the claims, so a reader can disagree with a threshold in one place.

Verdicts: ``holds``, ``does not hold here``, ``not testable at this scale`` (the record exists but
cannot speak to the claim, e.g. too few seeds) and ``not run`` (no record of that study yet).
"""
from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import read_records

__all__ = ["Claim", "Finding", "CLAIMS", "VERDICTS", "ledger"]

VERDICTS = ("holds", "does not hold here", "not testable at this scale", "not run")


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

    paper: str  #: BibTeX key of the paper (or the project, where there is no paper)
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


# --------------------------------------------------------------------------- composability (study 05)


def _composability_faster(records: list[dict[str, Any]]) -> Finding:
    rule = ("holds if, in most configurations, composing from tuned modules reaches the target dev score in less "
            "training time than the baseline, counting its share of the module-level tuning")
    runs = records[-1]["tracks"]["cls"]["runs"]
    configs = sorted({r["config"] for r in runs})
    faster = 0
    for c in configs:
        comp = next(r for r in runs if r["config"] == c and r["arm"] == "composability")
        base = next(r for r in runs if r["config"] == c and r["arm"] == "baseline")
        t_comp, t_base = comp.get("total_seconds_to_target"), base.get("total_seconds_to_target")
        if t_comp is not None and (t_base is None or t_comp < t_base):
            faster += 1
    verdict = "holds" if faster > len(configs) / 2 else "does not hold here"
    return Finding(verdict, f"composability reaches the target first in {faster} of {len(configs)} configurations",
                   rule, _scale(records[-1]))


CLAIMS: list[Claim] = [
    Claim("liu2021", "Lightweight fine-tuning reduces the fine-tuned parameters by 91 % on average.", "abstract",
          "01_mpop", _mpop_fewer_trained),
    Claim("liu2021", "Fine-tuning only the auxiliary tensors performs comparably to fine-tuning the whole MPO model.",
          "abstract", "01_mpop", _mpop_light_matches_full),
    Claim("liu2021", "Dimension squeezing reduces the parameters further at little cost in quality.", "abstract",
          "01_mpop", _mpop_squeeze),
    Claim("banaei2023", "The autoencoder significantly outperforms the factorizations offline.", "abstract",
          "04_offline", _offline_ae_beats),
    Claim("banaei2023", "Compressing a module type of all layers jointly helps.", "abstract", "04_offline",
          _offline_joint_helps),
    Claim("composability", "Module-level fine-tuning done once per shared module speeds up reaching the quality "
          "of each pruning configuration.", "README / thesis abstract", "05_composability", _composability_faster),
]


def ledger(results_dir: str | os.PathLike | None = None, claims: Sequence[Claim] = CLAIMS):
    """One row per claim: paper, claim, source, study, verdict, measured, rule, scale (a DataFrame).

    ``results_dir`` defaults to ``$MPSTUDY_RESULTS``, else ``results``. A study without records
    gives ``not run``; a check that cannot read its record fails loudly (a broken record is a bug).
    """
    import pandas as pd

    root = Path(results_dir or os.environ.get("MPSTUDY_RESULTS", "results"))
    rows = []
    for claim in claims:
        records = read_records(root, claim.study)
        finding = claim.check(records) if records else Finding("not run", "no record", "", "")
        rows.append({"paper": claim.paper, "claim": claim.claim, "source": claim.source, "study": claim.study,
                     "verdict": finding.verdict, "measured": finding.measured, "rule": finding.rule,
                     "scale": finding.scale})
    return pd.DataFrame(rows)
