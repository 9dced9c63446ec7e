"""The core install (``pip install mpstudy``: torch, transformers, safetensors, tensorly, numpy, scipy,
tqdm, pyyaml, accelerate) is enough to import mpstudy and compress, save, load and merge a model.

The study's and the book's packages are blocked in a fresh interpreter (``sys.modules[name] = None``
makes ``import name`` fail as if it were not installed), which then runs the core API on tiny-bert.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

#: what the [study] and [book] extras add (pyproject.toml); none of it may be needed by the core API
STUDY_ONLY = ["datasets", "sklearn", "sacrebleu", "pandas", "seaborn", "matplotlib", "papermill", "peft", "ipykernel",
              "sentence_transformers", "nbformat", "nbclient", "jupyter_book", "dask", "distributed", "pyarrow"]

SCRIPT = textwrap.dedent("""
    import sys, tempfile
    for name in {blocked!r}:
        sys.modules[name] = None
    import torch
    import mpstudy
    model, tokenizer = mpstudy.load_model("tiny-bert")
    report = mpstudy.compress(model, "svd", targets="all-linear", keep=0.5)
    batch = tokenizer(["a short sentence", "another one"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model.eval()(**batch).logits
    out = tempfile.mkdtemp()
    mpstudy.save_compressed(model, out + "/svd", tokenizer=tokenizer)
    back = mpstudy.load_compressed(out + "/svd")
    with torch.no_grad():
        assert torch.equal(back(**batch).logits, want)
        assert torch.allclose(mpstudy.merge(back)(**batch).logits, want, atol=1e-5)
    leaked = sorted(n for n in {blocked!r} if sys.modules.get(n) is not None)
    print("ok", report.params_after < report.params_before, leaked)
""")


def test_core_api_runs_without_the_study_packages():
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=STUDY_ONLY)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok True []"


def test_the_block_is_real():
    """The same block makes a study-only import fail (so the test above can fail)."""
    code = f"import sys\nfor n in {STUDY_ONLY!r}: sys.modules[n] = None\nimport sklearn.metrics"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "sklearn" in proc.stderr


def test_the_extras_are_lean_core_study_book_and_dev_holding_both():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert core == {"torch", "transformers", "huggingface_hub", "accelerate", "safetensors", "tensorly", "numpy", "scipy",
                    "tqdm", "pyyaml"}
    extras = project["optional-dependencies"]
    assert set(extras["study"]) | set(extras["book"]) <= set(extras["dev"])
    blocked = {"scikit-learn": "sklearn", "sentence-transformers": "sentence_transformers", "jupyter-book": "jupyter_book"}
    for requirement in extras["study"] + extras["book"]:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].strip()
        assert blocked.get(name, name) in STUDY_ONLY or name == "sphinx-mathjax-offline", name
