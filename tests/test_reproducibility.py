"""The reproducibility chapter's tables, from synthetic run stamps, study records and data files."""
import hashlib
import json
from pathlib import Path

import pytest

from mpstudy import reproducibility as rep

ROOT = Path(__file__).resolve().parent.parent


def _stamp(runs: Path, study: str, seconds: float, end: str, profile: str = "cpu", **extra) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    stamp = {"notebook": f"notebooks/{study}.ipynb", "profile": profile, "parameters": {"seed": 0},
             "seconds": seconds, "time_utc": end, "machine": "x86_64 2 cpus", "torch_threads": 1,
             "python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.23.0",
             "git_commit": "0123456789abcdef0123456789abcdef01234567-dirty", **extra}
    (runs / f"{study}-{profile}.json").write_text(json.dumps(stamp))


def _record(results: Path, study: str, files: dict, nested: bool = False) -> None:
    (results / study).mkdir(parents=True, exist_ok=True)
    data = {"data": {"files": files, "kind": "local"}}
    record = {"study": study, "tracks": {"cls": data}} if nested else {"study": study, "provenance": data}
    (results / study / "cpu-sst2-minilm.json").write_text(json.dumps(record))


@pytest.fixture
def project(tmp_path):
    results, data = tmp_path / "results", tmp_path / "data"
    (data / "glue" / "SST-2").mkdir(parents=True)
    contents = {"glue/SST-2/train.tsv": b"sentence\tlabel\nfine\t1\n", "glue/SST-2/dev.tsv": b"sentence\tlabel\nbad\t0\n"}
    sums = {}
    for rel, body in contents.items():
        (data / rel).write_bytes(body)
        sums[rel] = hashlib.sha256(body).hexdigest()
    _stamp(results / "runs", "00_a", 600.0, "2026-01-01T01:00:00+00:00")      # 00:50 - 01:00
    _stamp(results / "runs", "01_b", 1800.0, "2026-01-01T01:20:00+00:00")     # 00:50 - 01:20, overlaps 00_a
    _stamp(results / "runs", "02_c", 90.0, "2026-01-01T03:00:00+00:00")       # alone
    _stamp(results / "runs", "00_a", 5.0, "2026-01-02T00:00:00+00:00", profile="smoke")
    _record(results, "00_a", sums)
    _record(results, "01_b", {"glue/SST-2/dev.tsv": sums["glue/SST-2/dev.tsv"]}, nested=True)
    (results / "bench").mkdir()
    (results / "bench" / "x.json").write_text(json.dumps({"files": {"glue/other.tsv": "0" * 64}}))
    return results, data, sums


def test_run_table_and_total(project):
    results, _, _ = project
    table = rep.run_table(results / "runs")
    assert list(table["study"]) == ["00_a", "00_a", "01_b", "02_c"]
    assert rep.total_minutes(table, "cpu") == pytest.approx((600 + 1800 + 90) / 60)
    assert rep.total_minutes(table, "smoke") == pytest.approx(5 / 60)
    row = table[(table["study"] == "00_a") & (table["profile"] == "cpu")].iloc[0]
    assert row["hardware"] == "x86_64 2 cpus, 1 torch thread"
    assert row["date"] == "2026-01-01"
    assert row["commit"] == "0123456789-dirty"
    assert row["overlapped"] == "01_b"
    assert table[table["study"] == "02_c"].iloc[0]["overlapped"] == ""
    with pytest.raises(ValueError, match="no run stamp with profile 'gpu'.*cpu, smoke"):
        rep.total_minutes(table, "gpu")


def test_new_studies_are_picked_up(project):
    results, _, _ = project
    _stamp(results / "runs", "07_ledger", 120.0, "2026-01-03T00:00:00+00:00")
    table = rep.run_table(results / "runs")
    assert "07_ledger" in set(table["study"])
    assert rep.total_minutes(table) == pytest.approx((600 + 1800 + 90 + 120) / 60)


def test_data_files_ok_missing_modified(project):
    results, data, sums = project
    files = rep.data_files(results, data)
    assert set(files["file"]) == {"glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"}  # bench/ is not a study
    assert set(files["status"]) == {"ok"}
    dev = files[files["file"] == "glue/SST-2/dev.tsv"].iloc[0]
    assert dev["studies"] == "00_a, 01_b" and dev["sha256"] == sums["glue/SST-2/dev.tsv"]

    (data / "glue/SST-2/dev.tsv").write_bytes(b"sentence\tlabel\nchanged\t1\n")
    (data / "glue/SST-2/train.tsv").unlink()
    files = rep.data_files(results, data).set_index("file")
    assert files.loc["glue/SST-2/train.tsv", "status"] == "missing"
    assert files.loc["glue/SST-2/dev.tsv", "status"] == "modified"
    assert files.loc["glue/SST-2/dev.tsv", "found"] == hashlib.sha256(b"sentence\tlabel\nchanged\t1\n").hexdigest()
    text = rep.render_markdown(results / "runs", results, data)
    assert "**2 of 2 data files do not match the records**" in text
    assert "missing" in text and "modified: now" in text


def test_data_dir_from_environment_or_unchecked(project, monkeypatch):
    results, data, _ = project
    monkeypatch.setenv("MPSTUDY_DATA", str(data))
    assert set(rep.data_files(results)["status"]) == {"ok"}
    monkeypatch.delenv("MPSTUDY_DATA")
    assert set(rep.data_files(results)["status"]) == {"not checked"}
    with pytest.raises(FileNotFoundError, match="data dir .*nowhere"):
        rep.data_files(results, data.parent / "nowhere")


def test_files_printed_on_study_pages(project):
    """A file the executed page printed with its checksum, but the record does not list, is picked up."""
    results, data, sums = project
    (data / "multi30k").mkdir()
    (data / "multi30k" / "train.en").write_bytes(b"A dog runs.\n")
    digest = hashlib.sha256(b"A dog runs.\n").hexdigest()
    page = results.parent / "book" / "studies" / "01_b.ipynb"
    page.parent.mkdir(parents=True)
    page.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stdout",
         "text": [f"data: glue/SST-2/dev.tsv  sha256 {sums['glue/SST-2/dev.tsv']}\n", f"data: multi30k/train.en  sha256 {digest}\n"]}]}]}))
    stamp = json.loads((results / "runs" / "01_b-cpu.json").read_text())
    (results / "runs" / "01_b-cpu.json").write_text(json.dumps({**stamp, "output": "book/studies/01_b.ipynb"}))
    files = rep.data_files(results, data, results / "runs").set_index("file")
    assert files.loc["multi30k/train.en", "studies"] == "01_b (page)"
    assert files.loc["multi30k/train.en", "status"] == "ok"
    assert files.loc["glue/SST-2/dev.tsv", "studies"] == "00_a, 01_b"  # already in 01_b's record
    assert "multi30k/train.en" not in set(rep.data_files(results, data)["file"])  # records only


def test_conflicting_records_both_listed(project):
    results, data, sums = project
    _record(results, "02_c", {"glue/SST-2/dev.tsv": "f" * 64})
    files = rep.data_files(results, data)
    dev = files[files["file"] == "glue/SST-2/dev.tsv"]
    assert sorted(dev["status"]) == ["modified", "ok"]


def test_markdown_cli_writes_atomically(project, tmp_path, capsys):
    results, data, _ = project
    out = tmp_path / "book" / "repro.md"
    rc = rep.main(["--markdown", str(out), "--runs-dir", str(results / "runs"), "--results-dir", str(results),
                   "--data-dir", str(data)])
    assert rc == 0
    text = out.read_text()
    assert "**Total for the `cpu` profile: 41.5 min (42 min)**" in text
    assert "`mpstudy reproduce --profile cpu`" in text
    assert "Both files matched" in text
    assert "| `01_b` | `cpu` | 30.0 min |" in text
    assert not [p for p in out.parent.iterdir() if p.name != "repro.md"]  # no temporary file left behind


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"notebook": "n.ipynb", "profile": "cpu"}), "lacks seconds"),
    (json.dumps({"notebook": "n.ipynb", "profile": "cpu", "seconds": "long"}), "'seconds' must be a non-negative number"),
    (json.dumps({"notebook": "n.ipynb", "profile": "cpu", "seconds": -1}), "'seconds' must be a non-negative number"),
])
def test_bad_stamp_is_named(project, bad, message, capsys):
    results, data, _ = project
    (results / "runs" / "broken-cpu.json").write_text(bad)
    with pytest.raises(ValueError, match=message) as err:
        rep.run_table(results / "runs")
    assert "broken-cpu.json" in str(err.value)
    rc = rep.main(["--runs-dir", str(results / "runs"), "--results-dir", str(results), "--data-dir", str(data)])
    assert rc == 2
    err_line = capsys.readouterr().err.strip()
    assert err_line.startswith("error: ") and "broken-cpu.json" in err_line and "\n" not in err_line


def test_missing_folders_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no run stamps folder"):
        rep.run_table(tmp_path / "nothing")
    assert rep.main(["--runs-dir", str(tmp_path / "nothing")]) == 2
    assert "no run stamps folder" in capsys.readouterr().err


def test_strict_fails_on_modified_data(project):
    results, data, _ = project
    (data / "glue/SST-2/dev.tsv").write_bytes(b"other")
    args = ["--runs-dir", str(results / "runs"), "--results-dir", str(results), "--data-dir", str(data)]
    assert rep.main(args + ["--markdown", str(results / "r.md")]) == 0
    assert rep.main(args + ["--markdown", str(results / "r.md"), "--strict"]) == 1


def test_generated_page_is_current():
    """results/reproducibility.md, which the book includes, lists every run stamp of the repository."""
    page = (ROOT / "results" / "reproducibility.md").read_text()
    for stamp in rep.load_stamps(ROOT / "results" / "runs"):
        assert f"`{Path(stamp['notebook']).stem}` | `{stamp['profile']}`" in page, (
            f"{stamp['_path']} is not in results/reproducibility.md: regenerate it with "
            "MPSTUDY_DATA=... python -m mpstudy.reproducibility --markdown results/reproducibility.md")
