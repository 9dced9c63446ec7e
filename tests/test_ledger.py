"""The claims ledger turns typed records into verdicts by each study's stated rules, and says 'not run'
without records.

Every check (``mpstudy/studies/<paper>/claims.py``) is driven by small synthetic records, built
through the study's typed record, to sit on either side of its threshold; the committed records of
the cpu profile must give every claim a verdict other than 'not run'.
"""
import re
from pathlib import Path

import pytest

from mpstudy.studies import ledger as L
from mpstudy.studies.comparison import ComparisonRecord
from mpstudy.studies.comparison import claims as cmp
from mpstudy.studies.composability import ComposabilityRecord
from mpstudy.studies.composability import claims as comp
from mpstudy.studies.ledger import CLAIMS, VERDICTS, Finding, ledger
from mpstudy.studies.lobert import LobertRecord
from mpstudy.studies.lobert import claims as lobert
from mpstudy.studies.mpop import MpopRecord
from mpstudy.studies.mpop import claims as mpop
from mpstudy.studies.offline import OfflineRecord
from mpstudy.studies.offline import claims as offline
from mpstudy.studies.svd_distillation import SvdDistillRecord
from mpstudy.studies.svd_distillation import claims as svd

ROOT = Path(__file__).resolve().parent.parent
HOLDS, FAILS, UNTESTABLE = "holds", "does not hold here", "not testable at this scale"
INCONCLUSIVE = "inconclusive"


def _meta(profile="cpu", model="minilm", task="sst2", max_train=2000, seeds=(0, 1, 2), **extra):
    return {"parameters": {"model": model, "task": task, "max_train": max_train, "seeds": list(seeds), **extra},
            "provenance": {"profile": profile, "train_rows": max_train}}


# --------------------------------------------------------------------------- record builders, one per study
# (each returns the study's typed record, built from the dict its notebook would write)


#: dev rows of the synthetic MPOP records; a model of accuracy a is right on the first round(a * N) of them, so two
#: models differ only where their counts differ and a paired interval is as narrow as the data allows
_MPOP_DEV = 1000


def _mpop_preds(accuracy):
    refs = [i % 2 for i in range(_MPOP_DEV)]
    right = round(accuracy * _MPOP_DEV)
    return [r if i < right else 1 - r for i, r in enumerate(refs)]


def _mpop(light_trainable=90, light=(0.71, 0.72, 0.71), full=(0.70, 0.71, 0.70), dense=(0.80, 0.80, 0.80),
          accepted=(True, False), squeezed=None, predictions=True, **meta):
    """``squeezed``: the dev accuracy of each seed's lightweight model after squeezing (default: its own
    score + 0.5 point); ``predictions=False`` builds a record as written before the campaign."""
    def runs_of(variant, scores, stored, trainable):
        return [{"variant": variant, "seed": s, "score": v, "stored": stored, "trainable": trainable,
                 **({"predictions": _mpop_preds(v)} if predictions else {})} for s, v in enumerate(scores)]

    runs = runs_of("dense", dense, 1000, 1000) + runs_of("MPO lightweight", light, 900, light_trainable)
    runs += runs_of("MPO full", full, 900, 900)
    trajectory = [{"cut": 0, "stored": 900, "accepted": True}, {"cut": 1, "stored": 880, "accepted": accepted[0]},
                  {"cut": 2, "stored": 860, "accepted": accepted[1]}]
    n_accepted = 2 if all(accepted) else 1 if accepted[0] else 0  # the loop stops at the first refused cut
    end = (900, 880, 860)[n_accepted]
    after = squeezed if squeezed is not None else tuple(v + 0.005 for v in light)
    extra = {}
    if predictions:
        extra = {"references": _mpop_preds(1.0), "squeezed": [
            {"seed": s, "start_stored": 900, "stored": end, "accepted": n_accepted, "tried": 2, "start_predictions": _mpop_preds(v), "predictions": _mpop_preds(a)} for s, (v, a) in enumerate(zip(light, after))]}
    squeeze = [{**row, "seed": s} for s in range(len(light) if predictions else 1) for row in trajectory]
    return MpopRecord.from_dict({**_meta(seeds=range(len(light)), **meta), "runs": runs, "squeeze": squeeze, **extra})


def _lobert(kept=0.5, modes=None, dense=(0.80, 0.80), kd=None, predictions=True, **meta):
    """``dense``: the teachers' dev accuracy per seed; ``modes``/``kd``: each KD + PKD / KD-only student's per
    seed (predictions as in :func:`_mpop_preds`); ``predictions=False`` builds a record from before the campaign."""
    modes = modes if modes is not None else {"self_svd": (0.79, 0.79), "ffn_svd": (0.70, 0.70)}
    base = {"budget": "default", "init": "pretrained", "fit": "svd"}
    preds = (lambda v: {"predictions": _mpop_preds(v)}) if predictions else (lambda v: {})  # noqa: E731
    runs = [{**base, "part": "main", "loss": "kd+pkd", "mode": m, "seed": s, "score": v, **preds(v)}
            for m, scores in modes.items() for s, v in enumerate(scores)]
    runs += [{**base, "part": "loss", "loss": "kd", "mode": m, "seed": s, "score": v, **preds(v)}
             for m, scores in (kd or {}).items() for s, v in enumerate(scores)]
    decompositions = [{"mode": "self_svd", "budget": "default", "fit": "svd", "kept": kept, "param_ratio": 0.94}]
    teacher = {"scores": {str(s): v for s, v in enumerate(dense)}}
    extra = {}
    if predictions:
        teacher["predictions"] = {str(s): _mpop_preds(v) for s, v in enumerate(dense)}
        extra = {"references": _mpop_preds(1.0)}
    return LobertRecord.from_dict({**_meta(**meta), "runs": runs, "decompositions": decompositions, "teacher": teacher,
                                   **extra})


#: dev rows of the synthetic Noach & Goldberg records; as for MPOP, a model of accuracy a is right on the first
#: round(a * N) of them
_NG_DEV = 1000
_NG_REFS = [i % 2 for i in range(_NG_DEV)]


def _ng_preds(accuracy):
    right = round(accuracy * _NG_DEV)
    return [r if i < right else 1 - r for i, r in enumerate(_NG_REFS)]


def _svd(cells=None, original=0.85, untrained=((10, 0.70, 0.75), (20, 0.75, 0.80)), speedups=(2.0, 1.6),
         compact=(700, 0.85), stored=1000, s2s=None, predictions=True, **meta):
    """``cells``: (method, plan) -> scores over seeds; ``untrained``: (rank, svd, fwsvd) without training, every
    seed; ``compact``: (model_params, score) of the FWSVD + FD + KD cell; ``speedups`` at kept 0.4 and 0.6; each
    score becomes dev predictions right on its first rows (so paired differences have hand-known intervals)."""
    cells = cells if cells is not None else {
        ("svd", "none"): (0.70,) * 3, ("svd", "kd"): (0.80,) * 3, ("svd", "fd"): (0.83,) * 3,
        ("svd", "fd+kd"): (0.84,) * 3, ("fwsvd", "none"): (0.75,) * 3, ("fwsvd", "fd+kd"): (compact[1],) * 3}
    keep = lambda p: _ng_preds(p) if predictions else None  # noqa: E731
    grid = [{"method": m, "plan": p, "seed": s, "score": v, "accuracy": v, "predictions": keep(v),
             "model_params": compact[0] if (m, p) == ("fwsvd", "fd+kd") else 800}
            for (m, p), scores in cells.items() for s, v in enumerate(scores)]
    sweep = [{"method": m, "plan": "none", "rank": r, "keep": r / 100, "score": v, "model_params": 800, "seed": s,
              "predictions": keep(v)} for r, svd, fw in untrained for m, v in (("svd", svd), ("fwsvd", fw))
             for s in range(3)]
    dense = [{"seed": s, "score": original, "predictions": keep(original)} for s in range(3)]
    return SvdDistillRecord.from_dict({**_meta(**meta), "grid": grid, "sweep": sweep, "dense": dense,
            "references": _NG_REFS if predictions else None,
            "baseline": {"metrics": {"accuracy": original}, "params": {"stored": stored}},
            "budget": [{"model": "m", "rank": 10, "targeted matrices kept": 0.6, "whole model kept": 0.8},
                       {"model": "bert-base (paper)", "rank": 245, "targeted matrices kept": 0.5,
                        "whole model kept": 0.6}],
            "latency": [{"rank": 8, "kept_fraction": 0.4, "speedup": speedups[0]},
                        {"rank": 12, "kept_fraction": 0.6, "speedup": speedups[1]}],
            "seq2seq": s2s or {"probe": {"epoch_seconds": 900.0}, "rows": []}})


def _marian(wrong, model="Helsinki-NLP/opus-mt-en-de"):
    """The original translates all 200 test sentences exactly; FD then KD (3 seeds) gets ``wrong`` of them wrong."""
    refs = [f"ein mann mit {i} hunden geht heute nach hause" for i in range(200)]
    bad = [r if i >= wrong else "katze" for i, r in enumerate(refs)]
    rows = [{"plan": "original", "bleu": 100.0, "predictions": refs}, {"plan": "none", "bleu": 20.0, "predictions": bad}]
    rows += [{"plan": "fd+kd", "seed": s, "bleu": 90.0, "predictions": bad} for s in range(3)]
    return _svd(s2s={"probe": None, "rows": rows, "references": refs, "task": "multi30k"}, s2s_model=model,
                s2s_task="multi30k", s2s_mode="pipeline")


def _offline(ae=(0.80, 0.80), factor=(0.75, 0.75), ppl=None, model="minilm", separated=None):
    """Fine-tuned keys at CR 10 (dev predictions right on the first round(score * N) rows, as ``_mpop_preds``);
    ``separated``: the autoencoder's scores when compressed per layer (None: not fine-tuned that way)."""
    runs = [("concatenated", m, scores) for m, scores in (("ae", ae), ("svd", factor), ("tucker", factor))]
    runs += [("separated", "ae", separated)] if separated else []
    finetuned = [{"module": "key", "cr": 10, "mode": mode, "method": m, "seed": s, "score": v,
                  "predictions": _mpop_preds(v)} for mode, m, scores in runs for s, v in enumerate(scores)]
    finetuned += [{"module": "(dense)", "cr": 1, "mode": "", "method": "dense", "seed": 0, "score": 0.9}]
    grid = [{"module": "key", "cr": cr, "mode": "separated", "method": m, "feasible": True, "sentence_cosine": 0.5,
             **({"perplexity": p + cr} if ppl else {})}
            for cr in (3, 10) for m, p in (ppl or {"ae": 0, "svd": 0}).items()]
    return OfflineRecord.from_dict({**_meta(model=model), "finetuned": finetuned, "grid": grid,
                                    "references": _mpop_preds(1.0)})


def _offline_grid(ae=0.9, concatenated_bonus=0.05, seeds=3):
    grid = []
    for cr in (3, 10):
        for mode in ("separated", "concatenated"):
            for method, cos in (("ae", ae), ("kronecker", 0.5), ("tucker", 0.6), ("svd", 0.6), ("prune", 0.8)):
                bonus = concatenated_bonus if mode == "concatenated" else 0.0
                # the autoencoder (the one seeded method) with 3 seeds a hair apart, the others once
                for seed, jitter in (((0, 0.0), (1, 1e-4), (2, -1e-4))[:seeds] if method == "ae" else ((0, 0.0),)):
                    grid.append({"module": "key", "cr": cr, "mode": mode, "method": method, "feasible": True,
                                 "seed": seed, "sentence_cosine": cos + bonus + jitter})
    grid.append({"module": "key", "cr": 25, "mode": "separated", "method": "ae", "feasible": False, "sentence_cosine": 0.0})
    return OfflineRecord.from_dict({**_meta(), "grid": grid})


_COMP_REFS = [i % 2 for i in range(40)]


def _comp_preds(right: int, seed: int) -> list[int]:
    """Predictions of the 40 references above with the first ``right + seed`` of them correct."""
    k = min(40, right + seed)
    return [y if i < k else 1 - y for i, y in enumerate(_COMP_REFS)]


def _comp_runs(comp_start=(36, 36, 36), base_start=(20, 20, 20), comp_t=(10, 10, 10), base_t=(20, 20, 20)):
    """Three configurations x two arms x three seeds; ``*_start``: correct starting predictions per configuration;
    ``*_t``: seconds to the target per configuration (None: not reached, the budget 40 s counted)."""
    runs = []
    for c in range(3):
        for arm, start, t in (("composability", comp_start[c], comp_t[c]), ("baseline", base_start[c], base_t[c])):
            for s in range(3):
                reached = t is not None
                runs.append({"config": c, "arm": arm, "seed": s, "start_score": start / 40, "reached": reached,
                             "total_seconds_to_target": t + s if reached else None, "steps_to_target": 5 if reached else None,
                             "censored_s": (t if reached else 40) + s + 0.5 * (arm == "baseline") * s, "steps": 10,
                             "start_predictions": _comp_preds(start, s)})
    return runs


def _composability(s2s_model="tiny-t5", s2s_task="synthetic-seq2seq", s2s_times=((10, 10, 10), (20, 20, 20)), **kw):
    s2s = {"model": s2s_model, "task": s2s_task, "dense": {"score": 1.4},
           "runs": _comp_runs(comp_t=s2s_times[0], base_t=s2s_times[1])}
    cls = {"task": "sst2", "references": _COMP_REFS, "runs": _comp_runs(**kw)}
    return ComposabilityRecord.from_dict({**_meta(seeds=(0, 1, 2)), "tracks": {"cls": cls, "s2s": s2s}})


ALBERT = dict(model="albert-base-v2", max_train=None)

def _comparison(untrained, pairs=(), **meta):
    """``untrained``: method -> {(task, keep): score} of the compressed models before recovery (study 06);
    ``pairs``: (method, rival, diff, low, high) per cell of ``_CELLS`` in order, the paired differences."""
    runs = [{"task": task, "method": m, "keep": keep, "regime": "none", "seed": None, "score": v}
            for m, cells in untrained.items() for (task, keep), v in cells.items()]
    runs += [{"task": task, "method": m, "keep": keep, "regime": "finetune", "seed": 0, "score": 0.0}  # ignored
             for m, cells in untrained.items() for (task, keep) in cells]
    rows = [{"task": task, "keep": keep, "method": m, "rival": r, "diff": d, "low": lo, "high": hi, "seeds": 3}
            for (task, keep), (m, r, d, lo, hi) in zip(_CELLS * 2, pairs)]
    return ComparisonRecord.from_dict({
        "parameters": {"model": "minilm", "tasks": ["sst2", "mrpc"], "max_train": 1000, "keeps": [0.25, 0.5],
                       "seeds": [0, 1, 2]}, "provenance": {"profile": meta.get("profile", "cpu")}, "runs": runs,
        **({"pairs": rows} if rows else {})})


_CELLS = [("sst2", 0.25), ("sst2", 0.5), ("mrpc", 0.25)]


def _cells(*scores):
    return dict(zip(_CELLS, scores))


CASES = [
    # MPOP
    ("mpop 9 % trained", mpop.fewer_trained, _mpop(light_trainable=90), HOLDS),
    ("mpop 20 % trained", mpop.fewer_trained, _mpop(light_trainable=200), FAILS),
    ("mpop light ~ full", mpop.light_matches_full, _mpop(light=(0.71, 0.72, 0.71), full=(0.70, 0.71, 0.70)), HOLDS),
    ("mpop light << full", mpop.light_matches_full, _mpop(light=(0.60, 0.61, 0.62), full=(0.70, 0.71, 0.72)), FAILS),
    ("mpop light ~ full, seeds disagree", mpop.light_matches_full,
     _mpop(light=(0.69, 0.72, 0.70), full=(0.70, 0.70, 0.70)), INCONCLUSIVE),
    ("mpop light one seed", mpop.light_matches_full, _mpop(light=(0.70,), full=(0.60,), dense=(0.8,)), INCONCLUSIVE),
    ("mpop light, no predictions", mpop.light_matches_full, _mpop(predictions=False), UNTESTABLE),
    ("mpop squeeze cut", mpop.squeeze_removes, _mpop(accepted=(True, False)), HOLDS),
    ("mpop squeeze refused", mpop.squeeze_removes, _mpop(accepted=(False, False)), FAILS),
    ("mpop squeeze costly", mpop.squeeze_removes, _mpop(accepted=(True, True), squeezed=(0.60, 0.61, 0.60)), FAILS),
    ("mpop squeeze, no predictions", mpop.squeeze_removes, _mpop(predictions=False), UNTESTABLE),
    ("mpop on par", mpop.on_par_with_dense, _mpop(light=(0.798, 0.798, 0.798), dense=(0.80, 0.80, 0.80)), HOLDS),
    ("mpop below dense", mpop.on_par_with_dense, _mpop(light=(0.77, 0.77, 0.77), dense=(0.80, 0.80, 0.80)), FAILS),
    ("mpop on par, no predictions", mpop.on_par_with_dense, _mpop(predictions=False), UNTESTABLE),
    ("mpop albert 93", mpop.albert_numbers, _mpop(light=(0.95, 0.95, 0.95), **ALBERT), HOLDS),
    ("mpop albert 88", mpop.albert_numbers, _mpop(light=(0.88, 0.88, 0.88), **ALBERT), FAILS),
    ("mpop albert one seed", mpop.albert_numbers, _mpop(light=(0.95,), full=(0.9,), dense=(0.9,), **ALBERT), INCONCLUSIVE),
    ("mpop minilm albert", mpop.albert_numbers, _mpop(light=(0.93, 0.93, 0.93)), UNTESTABLE),
    ("mpop albert subset", mpop.albert_numbers, _mpop(light=(0.93, 0.93, 0.93), model="albert-base-v2"), UNTESTABLE),
    # LoBERT
    ("lobert 50 %", lobert.half_kept, _lobert(kept=0.5), HOLDS),
    ("lobert 30 %", lobert.half_kept, _lobert(kept=0.3), FAILS),
    ("lobert half keep", lobert.keeps_quality, _lobert(), HOLDS),
    ("lobert none keep", lobert.keeps_quality, _lobert(modes={"self_svd": (0.75, 0.75), "ffn_svd": (0.70, 0.70)}), FAILS),
    ("lobert one seed", lobert.keeps_quality, _lobert(dense=(0.8,), modes={"self_svd": (0.8,)}), INCONCLUSIVE),
    ("lobert keep, no predictions", lobert.keeps_quality, _lobert(predictions=False), UNTESTABLE),
    ("lobert pkd helps", lobert.pkd_helps, _lobert(kd={"self_svd": (0.77, 0.77)}), HOLDS),
    ("lobert pkd no help", lobert.pkd_helps, _lobert(kd={"self_svd": (0.79, 0.79)}), FAILS),
    ("lobert pkd one seed", lobert.pkd_helps, _lobert(kd={"self_svd": (0.70,)}), INCONCLUSIVE),
    ("lobert pkd, no predictions", lobert.pkd_helps, _lobert(kd={"self_svd": (0.77, 0.77)}, predictions=False),
     UNTESTABLE),
    # Noach & Goldberg
    ("ng minimal loss", svd.minimal_loss, _svd(original=0.85), HOLDS),
    ("ng big loss", svd.minimal_loss, _svd(original=0.90), FAILS),
    ("ng minimal loss, no predictions", svd.minimal_loss, _svd(predictions=False), UNTESTABLE),
    ("ng 1.8x", svd.speedup, _svd(speedups=(2.0, 1.6)), HOLDS),
    ("ng 1.2x", svd.speedup, _svd(speedups=(1.3, 1.1)), FAILS),
    ("ng fd then kd", svd.fd_then_kd, _svd(), HOLDS),
    ("ng kd alone", svd.fd_then_kd, _svd(cells={("svd", "kd"): (0.84,) * 3, ("svd", "fd"): (0.8,) * 3,
                                                   ("svd", "fd+kd"): (0.80,) * 3}), FAILS),
    ("ng fd then kd, no predictions", svd.fd_then_kd, _svd(predictions=False), UNTESTABLE),
    ("ng marian close", svd.seq2seq_bleu, _marian(0), HOLDS),
    ("ng marian far", svd.seq2seq_bleu, _marian(40), FAILS),
    ("ng tiny marian", svd.seq2seq_bleu, _marian(0, model="tiny-marian"), UNTESTABLE),
    ("ng probe only", svd.seq2seq_bleu, _svd(), UNTESTABLE),
    ("fwsvd untrained", svd.fwsvd_untrained, _svd(), HOLDS),
    ("fwsvd untrained tie", svd.fwsvd_untrained, _svd(untrained=((10, 0.70, 0.70), (20, 0.75, 0.80), (30, 0.8, 0.8))), FAILS),
    ("fwsvd recovered", svd.fwsvd_after_recovery, _svd(compact=(700, 0.87)), HOLDS),
    ("fwsvd not recovered", svd.fwsvd_after_recovery, _svd(compact=(700, 0.83)), FAILS),
    ("fwsvd compact 30 %", svd.fwsvd_compact, _svd(compact=(700, 0.85)), HOLDS),
    ("fwsvd compact, big loss", svd.fwsvd_compact, _svd(compact=(700, 0.80)), FAILS),
    ("fwsvd compact 5 %", svd.fwsvd_compact, _svd(compact=(950, 0.85)), UNTESTABLE),
    ("fwsvd not compact", svd.fwsvd_compact, _svd(stored=110_000_000, compact=(70_000_000, 0.85)), UNTESTABLE),
    # offline
    ("offline ae best", offline.ae_beats, _offline_grid(ae=0.9), HOLDS),
    ("offline ae worst", offline.ae_beats, _offline_grid(ae=0.55), FAILS),
    ("offline joint helps", offline.joint_helps, _offline_grid(concatenated_bonus=0.05), HOLDS),
    ("offline joint same", offline.joint_helps, _offline_grid(concatenated_bonus=0.0), FAILS),
    ("offline ae fine-tuned", offline.ae_finetuned, _offline(ae=(0.80, 0.80)), HOLDS),
    ("offline ae loses", offline.ae_finetuned, _offline(ae=(0.70, 0.70)), FAILS),
    ("offline one seed", offline.ae_finetuned, _offline(ae=(0.80,), factor=(0.75,)), INCONCLUSIVE),
    ("offline ae close", offline.ae_finetuned, _offline(ae=(0.752, 0.748), factor=(0.75, 0.75)), INCONCLUSIVE),
    ("offline joint fine-tuned", offline.joint_finetuned, _offline(separated=(0.70, 0.70)), HOLDS),
    ("offline joint fine-tuned worse", offline.joint_finetuned, _offline(separated=(0.90, 0.90)), FAILS),
    ("offline joint not fine-tuned", offline.joint_finetuned, _offline(), UNTESTABLE),
    ("offline ae one seed offline", offline.ae_beats, _offline_grid(ae=0.9, seeds=1), INCONCLUSIVE),
    ("offline ppl", offline.ae_perplexity, _offline(ppl={"ae": 10.0, "svd": 12.0, "tucker": 11.0}), HOLDS),
    ("offline ppl worse", offline.ae_perplexity, _offline(ppl={"ae": 13.0, "svd": 12.0}), FAILS),
    ("offline no ppl", offline.ae_perplexity, _offline(), UNTESTABLE),
    # composability
    ("comp faster", comp.faster, _composability(), HOLDS),
    ("comp slower", comp.faster, _composability(comp_t=(30, 30, None)), FAILS),
    ("comp better start", comp.better_start, _composability(), HOLDS),
    ("comp same start", comp.better_start, _composability(comp_start=(20, 20, 36)), FAILS),
    ("comp old record", comp.faster, ComposabilityRecord.from_dict({**_meta(), "tracks": {"cls": {"runs": [
        {"config": 0, "arm": "composability", "start_score": 0.7}, {"config": 0, "arm": "baseline", "start_score": 0.6}]}}}),
     UNTESTABLE),
    ("comp t5 faster", comp.t5_faster, _composability(s2s_model="t5-small", s2s_task="multi30k"), HOLDS),
    ("comp t5 slower", comp.t5_faster, _composability(s2s_model="t5-small", s2s_task="multi30k",
                                                           s2s_times=((30, 30, 30), (20, 20, 20))), FAILS),
    ("comp tiny t5", comp.t5_faster, _composability(), UNTESTABLE),
    # re-tested on the comparison (study 06); the mrpc cell ties everywhere and is left out
    ("cmp fwsvd wins", cmp.fwsvd_beats, _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)}, pairs=[
        ("fwsvd", "svd", 0.10, 0.07, 0.13), ("fwsvd", "svd", 0.05, 0.02, 0.08), ("fwsvd", "svd", 0.0, -0.01, 0.01)]), HOLDS),
    ("cmp fwsvd below half a point", cmp.fwsvd_beats, _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)}, pairs=[
        ("fwsvd", "svd", -0.05, -0.08, -0.02), ("fwsvd", "svd", 0.0, -0.004, 0.004), ("fwsvd", "svd", 0.1, 0.07, 0.13)]),
     FAILS),
    ("cmp fwsvd mixed", cmp.fwsvd_beats, _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)}, pairs=[
        ("fwsvd", "svd", 0.10, 0.07, 0.13), ("fwsvd", "svd", 0.0, -0.004, 0.004), ("fwsvd", "svd", 0.01, -0.02, 0.04)]),
     INCONCLUSIVE),
    ("cmp fwsvd old record", cmp.fwsvd_beats, _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)}), UNTESTABLE),
    ("cmp ae beats all", cmp.ae_beats, _comparison({m: _cells(0.6, 0.6, 0.841) for m in ("svd", "tucker", "kronecker")} | {"autoencoder": _cells(0.7, 0.7, 0.841)}, pairs=[
        ("autoencoder", "svd", 0.10, 0.08, 0.12), ("autoencoder", "tucker", 0.10, 0.08, 0.12),
        ("autoencoder", "svd", -0.1, -0.12, -0.08)]), HOLDS),
    ("cmp ae beaten", cmp.ae_beats, _comparison({m: _cells(0.6, 0.6, 0.841) for m in ("svd", "tucker", "kronecker")} | {"autoencoder": _cells(0.7, 0.7, 0.841)}, pairs=[
        ("autoencoder", "tucker", -0.05, -0.07, -0.03), ("autoencoder", "kronecker", -0.02, -0.04, -0.001),
        ("autoencoder", "svd", 0.1, 0.08, 0.12)]), FAILS),
    ("cmp ae old record", cmp.ae_beats, _comparison({m: _cells(0.6, 0.6, 0.841) for m in ("svd", "tucker", "kronecker")} | {"autoencoder": _cells(0.7, 0.7, 0.841)}), UNTESTABLE),
]


@pytest.mark.parametrize("check,record,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_checks_follow_their_rules(check, record, expected):
    finding = check([record])
    assert finding.verdict == expected, finding.measured
    assert finding.rule and finding.measured and finding.scale.startswith(record.profile)


def test_every_claim_has_a_case_on_each_side():
    """Each check is exercised by the table, with a case that holds and one that does not."""
    seen = {}
    for _, check, _, expected in CASES:
        seen.setdefault(check, set()).add(expected)
    for claim in CLAIMS:
        assert {HOLDS, FAILS} <= seen.get(claim.check, set()), claim.claim


def test_untestable_says_what_it_would_need():
    """'not testable' names the model or setting the claim needs, read from the record."""
    finding = mpop.albert_numbers([_mpop(model="minilm")])
    assert "minilm" in finding.measured and "albert-base-v2" in finding.measured
    finding = comp.t5_faster([_composability(s2s_model="tiny-t5")])
    assert "tiny-t5" in finding.measured and "t5-small" in finding.measured


def test_squeeze_reports_the_last_accepted_cut(tmp_path):
    _mpop().write(tmp_path, "cpu-t-m")
    table = ledger(tmp_path)
    squeeze = table[table.claim.str.startswith("Dimension squeezing")].iloc[0]
    assert squeeze.verdict == HOLDS and "-> 880" in squeeze.measured


def test_no_records_means_not_run(tmp_path):
    table = ledger(tmp_path)
    assert len(table) == len(CLAIMS) and set(table.verdict) == {"not run"}


def test_offline_claims_count_cells(tmp_path):
    _offline_grid().write(tmp_path, "cpu")
    table = ledger(tmp_path).set_index("study")
    assert list(table.loc["04_offline"].verdict)[:2] == [HOLDS, HOLDS]
    assert "4 of 4" in table.loc["04_offline"].measured.iloc[0]  # the infeasible cell is left out


def test_smoke_records_are_never_evidence(tmp_path):
    _mpop(profile="smoke", light_trainable=90).write(tmp_path, "smoke-t-m")
    row = ledger(tmp_path).iloc[0]
    assert row.verdict == UNTESTABLE and "would read: holds" in row.measured and row.rule.startswith("smoke profile")


def test_each_study_is_judged_on_one_profile(tmp_path):
    _mpop(light_trainable=90).write(tmp_path, "cpu-t-m")
    _mpop(profile="gpu", light_trainable=200).write(tmp_path, "gpu-t-m")
    _mpop(profile="smoke", light_trainable=90).write(tmp_path, "smoke-t-m")  # sorts last by name

    def first(table):  # the 91 % claim
        return table[table.study == "01_mpop"].iloc[0]

    assert first(ledger(tmp_path)).verdict == FAILS  # gpu is the most telling profile present
    assert first(ledger(tmp_path, profile="cpu")).verdict == HOLDS
    assert first(ledger(tmp_path, profile="smoke")).verdict == UNTESTABLE
    assert set(ledger(tmp_path, profile="gpu").query("study != '01_mpop'").verdict) == {"not run"}
    with pytest.raises(ValueError, match="profile"):
        ledger(tmp_path, profile="tpu")


def test_committed_records_give_every_claim_a_verdict():
    """On the committed results, no claim of a study that has records is 'not run', and every row says why."""
    results = ROOT / "results"
    table = ledger(results)
    have = {c.study for c in CLAIMS if c.record.read(results)}
    assert have, "no committed records"
    judged = table[table.study.isin(have)]
    assert "not run" not in set(judged.verdict)
    assert set(judged.verdict) <= set(VERDICTS)
    assert all(judged.rule.str.len() > 0) and all(judged.scale.str.len() > 0)


def test_claims_cite_known_papers():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), flags=re.M))
    for claim in CLAIMS:
        assert claim.paper in keys, f"{claim.paper} is not in book/references.bib"


def test_findings_refuse_unknown_verdicts():
    assert [Finding(v, "", "").verdict for v in VERDICTS] == list(VERDICTS)  # every known verdict is accepted
    with pytest.raises(ValueError, match="verdict"):
        Finding("probably", "", "")


def test_verdict_counts_add_up(tmp_path):
    _mpop().write(tmp_path, "cpu-t-m")
    counts = L.verdict_counts(ledger(tmp_path))
    assert list(counts.columns) == [*VERDICTS, "claims"]
    assert counts["claims"].sum() == len(CLAIMS)
    assert counts.index[0] == L.PAPERS["liu2021mpop"] and counts.iloc[0]["not run"] == 0
    assert set(L.PAPERS) == {c.paper for c in CLAIMS}


def test_comparison_checks_leave_out_tied_cells():
    record = _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)})
    assert cmp.wins_over(record, "fwsvd", ("svd",)) == (2, 2, 3)
    paired = _comparison({"svd": _cells(0.60, 0.70, 0.841), "fwsvd": _cells(0.70, 0.75, 0.841)},
                         pairs=[("fwsvd", "svd", 0.10, 0.07, 0.13)])
    assert "holds in 1, does not hold in 0 of 1 cells" in cmp.fwsvd_beats([paired]).measured
    assert "sst2 keep 0.25 vs svd: +10.0 pts [+7.0 pts, +13.0 pts] (holds)" in cmp.fwsvd_beats([paired]).measured


def _offline_errors(ae_error):
    """One (module, CR, mode) cell scored by relative error (lower is better)."""
    grid = [{"module": "key", "cr": 3, "mode": "separated", "method": m, "feasible": True, "rel_error": e, "seed": s,
             "sentence_cosine": 0.5} for m, e in (("ae", ae_error), ("svd", 0.5), ("tucker", 0.6), ("kronecker", 0.7))
            for s in ((0, 1) if m == "ae" else (0,))]  # two autoencoder seeds: an interval (of width 0)
    return OfflineRecord.from_dict({**_meta(), "grid": grid})


def test_offline_rules_on_an_error_measure_count_lower_as_better():
    """The page reads the same rules on reconstruction: on an error, the autoencoder wins by being lower."""
    assert offline.ae_wins(_offline_errors(0.3), "rel_error") == (1, 1)
    assert offline.ae_wins(_offline_errors(0.4995), "rel_error") == (0, 1)  # within the tie threshold
    assert offline.ae_wins(_offline_errors(0.8), "rel_error") == (0, 1)
    finding = offline.ae_beats([_offline_errors(0.3)], metric="rel_error")
    assert finding.verdict == HOLDS and "is below" in finding.rule and "relative Frobenius error" in finding.measured
    with pytest.raises(ValueError, match="metric must be one of"):
        offline.ae_wins(_offline_errors(0.3), "accuracy")


def test_offline_joint_rule_reads_one_method_when_asked():
    record = _offline_grid(concatenated_bonus=0.05)
    assert offline.joint_wins(record) == (10, 10)  # 2 ratios x 5 methods
    assert offline.joint_wins(record, methods=["ae"]) == (2, 2)
    assert offline.joint_helps([_offline_grid(concatenated_bonus=0.0)], methods=["ae"]).verdict == FAILS
