"""Each study's typed results record: the committed records load into it and write back unchanged, an
unknown label is refused where the record is built, and a label renamed in a notebook stops the
ledger instead of changing a verdict."""
import copy
import json
import math
from pathlib import Path

import pytest

from mpstudy.studies.comparison import ComparisonRecord
from mpstudy.studies.composability import ComposabilityRecord
from mpstudy.studies.ledger import CLAIMS, ledger
from mpstudy.studies.lobert import LOBERT_MODES, LobertRecord
from mpstudy.studies.lobert import claims as lobert_claims
from mpstudy.studies.mpop import MPO_LIGHTWEIGHT, MpopRecord
from mpstudy.studies.mpop import claims as mpop_claims
from mpstudy.studies.offline import OfflineRecord
from mpstudy.studies.svd_distillation import SvdDistillRecord
from mpstudy.studies.verdicts import HOLDS, UNTESTABLE, Claim, judge

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
RECORD_TYPES = [MpopRecord, LobertRecord, SvdDistillRecord, OfflineRecord, ComposabilityRecord, ComparisonRecord]
COMMITTED = [(t, p) for t in RECORD_TYPES for p in sorted((RESULTS / t.STUDY).glob("*.json"))]


def _same(a, b, path=""):
    """Differences between two JSON values (NaN equals NaN); keys only in ``b`` holding None are defaults."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k} dropped" for k in a if k not in b]
        out += [f"{path}/{k} added as {b[k]!r}" for k in b if k not in a and b[k] is not None]
        return out + [d for k in a if k in b for d in _same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def test_every_study_with_claims_has_a_committed_record():
    assert {t.STUDY for t, _ in COMMITTED} == {t.STUDY for t in RECORD_TYPES}
    assert {c.record for c in CLAIMS} == set(RECORD_TYPES)


@pytest.mark.parametrize("record_type,path", COMMITTED, ids=[f"{t.__name__}-{p.name}" for t, p in COMMITTED])
def test_committed_records_load_typed_and_write_back_unchanged(record_type, path, tmp_path):
    raw = json.loads(path.read_text())
    record = record_type.from_dict(raw)
    assert record.name == raw["name"] and record.profile == raw["provenance"]["profile"]
    written = record.write(tmp_path, raw["name"])
    assert _same(raw, json.loads(written.read_text())) == []
    assert record_type.read(tmp_path)[0].to_dict() == record.to_dict()


def _rename(rows_key, field, old, new, where=None):
    """A mutation of a raw record: the first row of ``rows_key`` whose ``field`` is ``old`` gets ``new``."""
    def apply(raw):
        rows = raw
        for key in rows_key.split("."):
            rows = rows[key]
        row = next(r for r in rows if r.get(field) == old and (where is None or where(r)))
        row[field] = new
    return apply


def _rename_key(container_key, old, new):
    def apply(raw):
        raw[container_key][new] = raw[container_key].pop(old)
    return apply


#: (record type, mutation of its committed record as a notebook rename would make it, the bad value)
RENAMES = [
    (MpopRecord, _rename("runs", "variant", "MPO lightweight", "MPO light"), "MPO light"),
    (MpopRecord, _rename("runs", "variant", "dense", "Dense"), "Dense"),
    (LobertRecord, _rename("runs", "loss", "kd+pkd", "kd + pkd"), "kd + pkd"),
    (LobertRecord, _rename("runs", "part", "main", "grid"), "grid"),
    (LobertRecord, _rename("decompositions", "mode", "self_svd", "self-svd"), "self-svd"),
    (LobertRecord, _rename("runs", "init", "pretrained", "pre-trained"), "pre-trained"),
    (SvdDistillRecord, _rename("grid", "plan", "fd+kd", "fd then kd"), "fd then kd"),
    (SvdDistillRecord, _rename("sweep", "method", "fwsvd", "FWSVD"), "FWSVD"),
    (SvdDistillRecord, _rename("budget", "model", "bert-base (paper)", "BERT-base, the paper"), "BERT-base, the paper"),
    (OfflineRecord, _rename("grid", "method", "ae", "autoencoder"), "autoencoder"),
    (OfflineRecord, _rename("grid", "mode", "concatenated", "joint"), "joint"),
    (OfflineRecord, _rename("finetuned", "method", "dense", "original"), "original"),
    (ComposabilityRecord, _rename("tracks.cls.runs", "arm", "composability", "tuned"), "tuned"),
    (ComposabilityRecord, _rename_key("tracks", "cls", "classification"), "classification"),
    (ComparisonRecord, _rename("runs", "method", "autoencoder", "ae"), "ae"),
    (ComparisonRecord, _rename("runs", "regime", "none", "untrained"), "untrained"),
    (ComparisonRecord, _rename("ranking", "method", "svd", "SVD"), "SVD"),
]


def _committed(record_type):
    return json.loads(next(p for t, p in COMMITTED if t is record_type).read_text())


@pytest.mark.parametrize("record_type,rename,bad", RENAMES, ids=[f"{t.__name__}-{b}" for t, _, b in RENAMES])
def test_an_unknown_label_is_refused_in_one_line(record_type, rename, bad):
    raw = _committed(record_type)
    record_type.from_dict(copy.deepcopy(raw))  # the committed record itself is accepted
    rename(raw)
    with pytest.raises(ValueError) as err:
        record_type.from_dict(raw)
    message = str(err.value)
    assert repr(bad) in message or bad in message
    assert "\n" not in message and len(message) < 400


def test_every_record_type_refuses_an_unknown_label():
    """The table above covers each record type (so none of them accepts any label)."""
    assert {t for t, _, _ in RENAMES} == set(RECORD_TYPES)


def test_a_row_missing_a_judged_field_is_refused_in_one_line():
    raw = _committed(MpopRecord)
    del raw["runs"][0]["variant"]
    with pytest.raises(ValueError, match=r"MpopRun row needs \['variant'\]"):
        MpopRecord.from_dict(raw)


def test_a_record_of_another_study_is_refused():
    with pytest.raises(ValueError, match="01_mpop"):
        MpopRecord.from_dict(_committed(OfflineRecord))


def test_a_label_renamed_in_a_notebook_stops_the_ledger(tmp_path):
    """Before typed records, renaming 'MPO lightweight' in notebook 01 silently changed MPOP's verdicts
    (the rules found no such runs); now the ledger refuses the record."""
    raw = _committed(MpopRecord)
    for run in raw["runs"]:
        if run["variant"] == MPO_LIGHTWEIGHT:
            run["variant"] = "MPO light"
    folder = tmp_path / MpopRecord.STUDY
    folder.mkdir()
    (folder / f"{raw['name']}.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="MPO light"):
        ledger(tmp_path)
    raw_ok = _committed(MpopRecord)
    (folder / f"{raw['name']}.json").write_text(json.dumps(raw_ok))
    assert ledger(tmp_path).query("study == '01_mpop'").verdict.iloc[0] == HOLDS


def test_a_claim_reads_its_own_study_record():
    with pytest.raises(ValueError, match="02_lobert"):
        Claim("liu2021mpop", "x", "y", "01_mpop", mpop_claims.fewer_trained, LobertRecord)


def test_judge_reads_a_smoke_record_as_untestable():
    """What the notebooks print: the ledger's reading of one claim, smoke records never evidence."""
    record = MpopRecord.from_dict(_committed(MpopRecord))
    assert judge(mpop_claims.fewer_trained, [record]).verdict == HOLDS
    record.provenance = {**record.provenance, "profile": "smoke"}
    finding = judge(mpop_claims.fewer_trained, [record])
    assert finding.verdict == UNTESTABLE and "would read: holds" in finding.measured
    with pytest.raises(ValueError, match="at least one record"):
        judge(mpop_claims.fewer_trained, [])


def test_the_lobert_demo_mode_is_a_registered_mode():
    assert lobert_claims.DEMO_MODE in LOBERT_MODES


STUDY_NOTEBOOKS = {"01_mpop": "MpopRecord", "02_lobert": "LobertRecord", "03_svd_distillation": "SvdDistillRecord",
                   "04_offline": "OfflineRecord", "05_composability": "ComposabilityRecord",
                   "06_comparison": "ComparisonRecord"}


def _code(notebook: str) -> str:
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("notebook,record_type", STUDY_NOTEBOOKS.items())
def test_study_notebooks_write_through_their_record_and_judge_nothing_themselves(notebook, record_type):
    code = _code(notebook)
    assert f"{record_type}(" in code and "write_record(" not in code
    assert "def verdict" not in code and '"holds"' not in code and "'holds'" not in code
