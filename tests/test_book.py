"""The book builds offline, with Sphinx warnings as errors, from what is committed."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_book_builds_without_warnings(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    out = tmp_path / "build"
    proc = subprocess.run(
        [str(jb) if jb.exists() else shutil.which("jupyter-book"), "build", "--all", "-W", "-n", "--keep-going",
         "--path-output", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = out / "_build" / "html"
    for page in ("book/intro.html", "book/low_rank.html", "book/studies/00_offline_svd.html", "book/reproducibility.html"):
        assert (html / page).exists(), page
