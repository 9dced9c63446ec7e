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


def test_the_api_page_documents_every_public_module():
    """Every module of the package (none private) has an ``automodule`` on the library reference page."""
    import re

    documented = set(re.findall(r"^\.\. automodule:: (\S+)$", (ROOT / "book" / "api.md").read_text(), flags=re.M))
    modules = set()
    for path in (ROOT / "mpstudy").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__" and not any(p.startswith("_") for p in parts):
            modules.add(".".join(parts))
    assert sorted(modules - documented) == []
    assert sorted(documented - modules) == []  # no entry for a module that is gone


def test_cross_page_glue_references_name_values_the_committed_pages_glue():
    """A chapter's {glue:...}`studies/NN.ipynb::name` must name a value that committed page glues (the
    build would fail on it; this says which, in a second rather than minutes)."""
    import json
    import re

    glued = {}
    for page in (ROOT / "book" / "studies").glob("*.ipynb"):
        cells = json.loads(page.read_text())["cells"]
        glued[page.name] = {o["metadata"]["scrapbook"]["name"] for c in cells for o in c.get("outputs", [])
                            if "scrapbook" in o.get("metadata", {})}
    missing = []
    for chapter in sorted((ROOT / "book").glob("*.md")):
        for number, line in enumerate(chapter.read_text().splitlines(), 1):
            for ref in re.findall(r"\{glue(?::\w+)?\}`([^`]+::[^`]+)`", line):
                page, name = ref.split("::")[0], ref.split("::")[1].split(":")[0]
                if name not in glued.get(Path(page).name, set()):
                    missing.append(f"{chapter.name}:{number}: {ref}")
    assert missing == []
