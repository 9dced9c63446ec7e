"""What each study run took, and which data it read: the tables of the book's reproducibility chapter.

Two sources, both written by ``mpstudy run``:

- the run stamps ``results/runs/<study>-<profile>.json`` (parameters, wall-clock ``seconds``, and
  the provenance of the run: git commit, machine, torch version and threads, time it ended);
- the study records ``results/<study>/*.json``, whose provenance lists every data file a study read
  with its sha256 (under any ``files`` mapping of relative path to checksum).

:func:`run_table` and :func:`data_files` return pandas DataFrames; :func:`render_markdown` turns
both into the markdown the book includes, and ``python -m mpstudy.reproducibility --markdown
results/reproducibility.md`` writes it atomically. New studies are picked up from their stamps and
records: nothing here lists the studies by name.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .campaign import coverage_table
from .records import file_sha256, write_text_atomic

__all__ = ["load_stamps", "run_table", "total_minutes", "recorded_files", "data_files", "render_markdown",
           "write_markdown", "main"]

#: fields every run stamp must have
REQUIRED = ("notebook", "profile", "seconds")
#: folders of ``results/`` that hold no study records
NOT_STUDIES = ("runs", "bench")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: how a study page prints a file it read — ``data: glue/SST-2/dev.tsv  sha256 <hex>``
_PAGE_LINE = re.compile(r"(?:^|\s)data:\s+(\S+)\s+sha256\s+([0-9a-f]{64})\s*$")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def load_stamps(runs_dir: str | os.PathLike = "results/runs") -> list[dict[str, Any]]:
    """The run stamps in ``runs_dir`` (``*.json``), each with its file name under ``"_path"``.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` naming the file for a
    stamp that is not JSON, not an object, lacks one of ``notebook``, ``profile``, ``seconds``,
    or has a negative or non-numeric ``seconds``.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no run stamps folder {runs_dir} (mpstudy run writes results/runs/)")
    stamps = []
    for path in sorted(runs_dir.glob("*.json")):
        stamp = _read_json(path)
        if not isinstance(stamp, dict):
            raise ValueError(f"{path}: a run stamp must be a JSON object, got {type(stamp).__name__}")
        missing = [k for k in REQUIRED if k not in stamp]
        if missing:
            raise ValueError(f"{path}: run stamp lacks {', '.join(missing)} (needs {', '.join(REQUIRED)})")
        seconds = stamp["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"{path}: 'seconds' must be a non-negative number, got {seconds!r}")
        stamps.append({**stamp, "_path": str(path)})
    return stamps


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _short_commit(commit: Any) -> str:
    if not isinstance(commit, str) or not commit:
        return "unknown"
    head, dirty = (commit[:-6], "-dirty") if commit.endswith("-dirty") else (commit, "")
    return head[:10] + dirty


def run_table(runs_dir: str | os.PathLike = "results/runs") -> pd.DataFrame:
    """One row per run stamp: what each study run took and where it ran.

    Columns: ``study`` (the notebook's stem), ``profile``, ``minutes`` (wall clock), ``hardware``
    (machine and torch threads as recorded), ``software`` (python, torch, transformers),
    ``started`` and ``finished`` (UTC; the stamp records the end, the start is end minus
    duration), ``date``, ``commit`` (shortened; ``-dirty`` = uncommitted changes at run time), and
    ``overlapped`` (the other runs whose time span intersected this one's on the same machine:
    they shared its CPU, which lengthens both wall-clock times). Sorted by study and profile.
    """
    stamps = load_stamps(runs_dir)
    rows = []
    for s in stamps:
        end = _parse_time(s.get("time_utc"))
        start = end - timedelta(seconds=float(s["seconds"])) if end else None
        threads = s.get("torch_threads")
        hardware = str(s.get("machine") or "unknown")
        if threads is not None:
            hardware += f", {threads} torch thread{'s' if threads != 1 else ''}"
        software = ", ".join(f"{k} {s[k]}" for k in ("python", "torch", "transformers") if s.get(k))
        rows.append({
            "study": Path(str(s["notebook"])).stem,
            "profile": str(s["profile"]),
            "minutes": float(s["seconds"]) / 60.0,
            "hardware": hardware,
            "software": software or "unknown",
            "started": start,
            "finished": end,
            "date": end.date().isoformat() if end else "unknown",
            "commit": _short_commit(s.get("git_commit")),
            "machine": str(s.get("machine") or "unknown"),
        })
    for r in rows:
        others = []
        for o in rows:
            if o is r or r["started"] is None or o["started"] is None or r["machine"] != o["machine"]:
                continue
            if r["started"] < o["finished"] and o["started"] < r["finished"]:
                others.append(o["study"] if o["profile"] == r["profile"] else f"{o['study']} ({o['profile']})")
        r["overlapped"] = ", ".join(sorted(others))
    table = pd.DataFrame(rows, columns=["study", "profile", "minutes", "hardware", "software", "started",
                                        "finished", "date", "commit", "machine", "overlapped"])
    return table.drop(columns="machine").sort_values(["study", "profile"]).reset_index(drop=True)


def total_minutes(table: pd.DataFrame, profile: str = "cpu") -> float:
    """Sum of the wall-clock minutes of ``profile``'s runs: the time of ``mpstudy reproduce --profile P``
    run study after study on the recorded machines. Raises ``ValueError`` if no run has that profile."""
    rows = table[table["profile"] == profile]
    if rows.empty:
        known = sorted(set(table["profile"]))
        raise ValueError(f"no run stamp with profile {profile!r} (stamps have: {', '.join(known) or 'none'})")
    return float(rows["minutes"].sum())


def _page_files(notebook: Path) -> list[tuple[str, str]]:
    """``(path, sha256)`` pairs an executed study page printed (its ``data: PATH  sha256 HEX`` lines)."""
    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, json.JSONDecodeError):
        return []
    pairs = []
    for cell in cells:
        for out in cell.get("outputs", []) if isinstance(cell, dict) else []:
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else str(text)
            for line in text.splitlines():
                m = _PAGE_LINE.search(line)
                if m:
                    pairs.append((m.group(1), m.group(2)))
    return pairs


def recorded_files(results_dir: str | os.PathLike = "results",
                   runs_dir: str | os.PathLike | None = None) -> dict[str, dict[str, set[str]]]:
    """Data files named in the study records: ``{relative path: {sha256: {studies}}}``.

    Every ``results/<study>/*.json`` except ``runs/`` and ``bench/`` is searched for mappings named
    ``files`` whose values are sha256 digests (``provenance.data.files``, a track's
    ``data.files``, ...). Two records giving one path different checksums both appear.

    With ``runs_dir``, the executed study pages its stamps name (``output``, relative to the
    parent of ``results_dir``) are read too, for files a page printed with their checksum but its
    record does not list; such a study appears as ``"<study> (page)"``.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no results folder {results_dir}")
    found: dict[str, dict[str, set[str]]] = {}

    def walk(obj: Any, study: str) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "files" and isinstance(value, dict):
                    for rel, digest in value.items():
                        if isinstance(digest, str) and _SHA256.match(digest):
                            found.setdefault(str(rel), {}).setdefault(digest, set()).add(study)
                walk(value, study)
        elif isinstance(obj, list):
            for item in obj:
                walk(item, study)

    for study_dir in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name not in NOT_STUDIES):
        for path in sorted(study_dir.glob("*.json")):
            walk(_read_json(path), study_dir.name)
    if runs_dir is not None:
        root = results_dir.resolve().parent
        for stamp in load_stamps(runs_dir):
            if not stamp.get("output"):
                continue
            study = Path(str(stamp["notebook"])).stem
            for rel, digest in _page_files(root / str(stamp["output"])):
                studies = found.setdefault(rel, {}).setdefault(digest, set())
                if study not in studies:
                    studies.add(f"{study} (page)")
    return found


def data_files(results_dir: str | os.PathLike = "results", data_dir: str | os.PathLike | None = None,
               runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The data files the study records name, checked against the files in ``data_dir``.

    ``data_dir`` defaults to ``$MPSTUDY_DATA``; ``runs_dir`` adds the files the executed study
    pages printed (see :func:`recorded_files`). Columns: ``file`` (relative to the data dir),
    ``sha256`` (as recorded), ``studies`` (which studies read it), ``status``: ``ok`` (the file
    hashes to the recorded sha256), ``missing`` (no such file), ``modified`` (another sha256,
    given in ``found``), or ``not checked`` when there is no data dir. Raises
    ``FileNotFoundError`` when a data dir is given but does not exist.
    """
    if data_dir is None:
        data_dir = os.environ.get("MPSTUDY_DATA") or None
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"data dir {root} does not exist (give --data-dir or set MPSTUDY_DATA)")
    rows = []
    hashes: dict[str, str | None] = {}
    for rel, digests in sorted(recorded_files(results_dir, runs_dir).items()):
        if root is not None and rel not in hashes:
            path = root / rel
            hashes[rel] = file_sha256(path) if path.is_file() else None
        for digest, studies in sorted(digests.items()):
            if root is None:
                status, found = "not checked", ""
            elif hashes[rel] is None:
                status, found = "missing", ""
            elif hashes[rel] == digest:
                status, found = "ok", digest
            else:
                status, found = "modified", hashes[rel]
            rows.append({"file": rel, "sha256": digest, "studies": ", ".join(sorted(studies)),
                         "status": status, "found": found})
    return pd.DataFrame(rows, columns=["file", "sha256", "studies", "status", "found"])


def _hours(minutes: float) -> str:
    h, m = divmod(int(round(minutes)), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(runs_dir: str | os.PathLike = "results/runs", results_dir: str | os.PathLike = "results",
                    data_dir: str | os.PathLike | None = None) -> str:
    """The markdown the reproducibility chapter includes: the runs with their total per profile,
    and the data files with their checksums and the result of checking them."""
    table = run_table(runs_dir)
    out = ["| study | profile | wall time | hardware | software | finished (UTC) | commit | ran alongside |",
           "|---|---|---:|---|---|---|---|---|"]
    for _, r in table.iterrows():
        finished = "unknown" if pd.isna(r["finished"]) else r["finished"].strftime("%Y-%m-%d %H:%M")
        out.append("| " + " | ".join([
            f"`{r['study']}`", f"`{r['profile']}`", f"{r['minutes']:.1f} min", r["hardware"], r["software"],
            finished, f"`{r['commit']}`", r["overlapped"] or "nothing"]) + " |")
    out.append("")
    for profile in sorted(set(table["profile"])):
        n = int((table["profile"] == profile).sum())
        total = total_minutes(table, profile)
        out.append(f"**Total for the `{profile}` profile: {total:.1f} min ({_hours(total)})**, the sum of the "
                   f"wall times of its {n} stud{'y' if n == 1 else 'ies'} above, which is what "
                   f"`mpstudy reproduce --profile {profile}` takes when it runs every study one after another "
                   f"on that machine.")
        out.append("")
    if (table["overlapped"] != "").any():
        out.append("Runs marked as having run alongside others shared the machine's CPU cores with them for "
                   "part of their time, so their wall times are longer than on an idle machine.")
        out.append("")

    out += _campaign_markdown(results_dir)

    files = data_files(results_dir, data_dir, runs_dir)
    if files.empty:
        out.append("No study record names a data file.")
    else:
        out.append("Data files read by the studies, with the sha256 recorded in the study records (or, marked "
                   "*(page)*, printed only on the executed study page), checked when this table was generated "
                   "against the files in the data folder (`$MPSTUDY_DATA`):")
        out.append("")
        rows = []
        for _, f in files.iterrows():
            status = f["status"] if f["status"] != "modified" else f"modified: now `{f['found']}`"
            rows.append([f"`{f['file']}`", f"`{f['sha256']}`", f["studies"], status])
        out.append(_md_table(["file", "sha256 (recorded)", "read by", "check"], rows))
        out.append("")
        bad = files[files["status"].isin(["missing", "modified"])]
        if len(bad):
            out.append(f"**{len(bad)} of {len(files)} data files do not match the records** (missing or modified): "
                       "the results above were not produced from the files now in the data folder.")
        elif (files["status"] == "not checked").all():
            out.append("No data folder was given when this page was generated, so the files were not checked.")
        else:
            n = len(files)
            out.append(f"{'Both' if n == 2 else f'All {n}'} file{'s' if n > 1 else ''} matched the recorded "
                       f"checksum{'s' if n > 1 else ''} when this page was generated.")
        out.append("")
    return "\n".join(out)


def _campaign_markdown(results_dir: str | os.PathLike) -> list[str]:
    """The campaign's coverage: per study, units recorded of units planned, their CPU- and wall-hours
    (summed over the units' records) and how many code versions produced them."""
    rows = coverage_table(results_dir)
    if not rows:
        return ["No campaign unit is recorded yet (`results/<study>/units/`).", ""]
    out = ["Campaign units recorded in `results/<study>/units/` (one JSON record per unit; a study's plan is "
           "declared when its page starts):", ""]
    table = []
    for c in rows:
        planned = "not declared" if c["planned"] is None else str(c["planned"])
        table.append([f"`{c['study']}`", str(c["done"]), planned, "yes" if c["complete"] else "no",
                      f"{c['cpu_hours']:.2f}", f"{c['wall_hours']:.2f}", str(len(c["code_versions"]))])
    out.append(_md_table(["study", "units done", "units planned", "complete", "CPU-hours", "wall hours",
                          "code versions"], table))
    cpu, wall = sum(c["cpu_hours"] for c in rows), sum(c["wall_hours"] for c in rows)
    out += ["", f"**Campaign so far: {cpu:.2f} CPU-hours, {wall:.2f} wall hours** (sums over the recorded units; "
                "CPU-hours count this process and its waited-for workers).", ""]
    return out


def write_markdown(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (readers never see half a file), ending in a newline."""
    return write_text_atomic(path, text if text.endswith("\n") else text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpstudy.reproducibility",
        description="Tabulate the study runs (results/runs/) and the data checksums (study records).")
    parser.add_argument("--markdown", metavar="PATH", help="write the markdown here (atomically) instead of stdout")
    parser.add_argument("--runs-dir", default="results/runs", help="run stamps (default: results/runs)")
    parser.add_argument("--results-dir", default="results", help="study records (default: results)")
    parser.add_argument("--data-dir", default=None, help="data folder to check checksums against (default: $MPSTUDY_DATA)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a recorded data file is missing or modified")
    args = parser.parse_args(argv)
    try:
        text = render_markdown(args.runs_dir, args.results_dir, args.data_dir)
        files = data_files(args.results_dir, args.data_dir, args.runs_dir)
        bad = files["status"].isin(["missing", "modified"]).any()
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.markdown:
        write_markdown(args.markdown, text)
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
