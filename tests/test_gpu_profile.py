"""The gpu profile of every study runs to the end, without a GPU: its code paths at a tiny size.

Each study's ``gpu`` parameters go through :func:`mpstudy.profiles.shrunk` (the papers' models swapped
for their tiny random-init counterparts, rows, epochs, steps, widths, seeds and budgets capped;
everything else, the profile name, tasks, methods and None switches included, as the gpu profile has
it), papermill injects them into the notebook as ``mpstudy run --profile gpu`` does, and the notebook
runs to the end on a tiny data dir in the real GLUE / Multi30K file layouts (the gpu profile's tasks
come from the hub, which the test suite cannot reach). The ledger (07) runs last and judges the gpu
records the others wrote. This catches what only the gpu profile reaches: ALBERT's MPO caps, Marian and
T5 with a source prefix, a pre-trained seq2seq model used as loaded (``s2s_dense_epochs: 0``),
regression (STS-B) in the comparison, ``None`` for "all rows" and "torch's default threads"...

Cost: importing mpstudy and the four model families takes ~8 s of CPU in a fresh kernel, more than
most of these runs' own work, so the eight notebooks share one kernel, its namespace reset between
them (``%reset -f``): ~1 minute on 2 cores instead of ~2. What ``mpstudy run`` adds around papermill
(stamps, fingerprints, the page's metadata) is tested on tiny notebooks in tests/test_fingerprints.py.
"""
from __future__ import annotations

import random
from pathlib import Path

import nbformat
import pytest

from mpstudy.parameters import check_parameters, declared_parameters
from mpstudy.profiles import get_profile, shrunk

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))

WORDS = ("good bad movie film plot actor scene great awful boring funny long short story music dull "
         "brilliant slow sharp warm cold").split()
DE = "gut schlecht Hund Katze Mann Frau Haus Auto rennt spielt sitzt steht auf dem der die das".split()


def _sentence(rng: random.Random, words=WORDS, n=(4, 9)) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(*n)))


def write_tiny_data(root: Path, rows: int = 40, seed: int = 0) -> Path:
    """SST-2, MRPC and STS-B (train/dev) and Multi30K (train/val/test_2016_flickr) in their real file
    layouts, ``rows`` rows per split, random words: enough for every capped gpu run."""
    rng = random.Random(seed)

    def write(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    for split in ("train", "dev"):
        write(f"glue/SST-2/{split}.tsv", "sentence\tlabel\n" + "".join(f"{_sentence(rng)}\t{i % 2}\n" for i in range(rows)))
        write(f"glue/MRPC/{split}.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
              + "".join(f"{i % 2}\t{2 * i}\t{2 * i + 1}\t{_sentence(rng)}\t{_sentence(rng)}\n" for i in range(rows)))
        write(f"glue/STS-B/{split}.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
              + "".join(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{_sentence(rng)}\t{_sentence(rng)}\t"
                        f"{rng.uniform(0, 5):.2f}\n" for i in range(rows)))
    for split in ("train", "val", "test_2016_flickr"):
        pairs = [(_sentence(rng), _sentence(rng, DE)) for _ in range(rows)]
        write(f"multi30k/{split}.en", "".join(en + "\n" for en, _ in pairs))
        write(f"multi30k/{split}.de", "".join(de + "\n" for _, de in pairs))
    return root


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A tiny data dir, a results dir, and one kernel the studies run in, one after the other."""
    from jupyter_client.manager import KernelManager

    base = tmp_path_factory.mktemp("gpu-profile")
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(base))
    try:
        yield {"data": write_tiny_data(base / "data"), "out": base / "out", "res": base / "res", "km": km}
    finally:
        km.shutdown_kernel(now=True)


def run_notebook(notebook: Path, params: dict, output: Path, km) -> nbformat.NotebookNode:
    """Inject ``params`` as papermill does and run every cell in ``km``'s kernel, after a reset of its
    namespace (imported modules stay: the point of sharing the kernel)."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), params)
    reset = nbformat.v4.new_code_cell('get_ipython().run_line_magic("reset", "-f")\n'
                                      'import matplotlib.pyplot as plt\nplt.close("all")\ndel plt')
    nb.cells.insert(0, reset)
    try:
        NotebookClient(nb, km=km, timeout=600, kernel_name="python3").execute()
    finally:
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output)  # what ran, for a look after a failure
    return nb


def test_shrunk_keeps_the_gpu_code_paths():
    params = get_profile("gpu", "03_svd_distillation")
    small = shrunk(params)
    assert params["dense"]["model_name"] == "bert-base-uncased" and small["dense"]["model_name"] == "tiny-bert"  # untouched
    assert small["s2s_model_name"] == "tiny-marian" and small["profile"] == "gpu"
    assert small["dense"]["max_train"] == 24 and small["dense"]["max_eval"] == 16 and small["s2s_max_eval"] == 16  # None: capped
    assert small["latency_ranks"] == [5, 11, 16, 20, 27] and small["steps"] == small["s2s_steps"] == 2
    assert small["s2s_mode"] == params["s2s_mode"] == "pipeline" and small["seeds"] == [0]
    assert small["sweep_keeps"] == [0.6] and shrunk(params, seeds=2, budgets=2)["sweep_keeps"] == [0.4, 0.6]
    assert shrunk(get_profile("gpu", "04_offline"))["finetune_cells"] == [
        ["word_embeddings", 3, "separated"], ["key", 3, "concatenated"], ["ffn_out", 3, "concatenated"]]
    assert shrunk(get_profile("gpu", "01_mpop"))["dense"]["model_name"] == "tiny-albert"  # MPOP's own dense block: ALBERT
    assert shrunk(get_profile("gpu", "05_composability"))["s2s_model_name"] == "tiny-t5"
    assert shrunk(get_profile("gpu", "02_lobert"), budgets=2)["sweep"]["ffn_svd"] == [{"ranks": 13}, {"ranks": 4}]
    with pytest.raises(ValueError, match="no tiny counterpart for model 'roberta-large'"):
        shrunk({"model_name": "roberta-large"})


@pytest.mark.parametrize("study", STUDIES)
def test_gpu_profile_runs_to_the_end(study, gpu_run):
    notebook = ROOT / "notebooks" / f"{study}.ipynb"
    declared = declared_parameters(notebook)
    params = {**shrunk(get_profile("gpu", study)), "data_dir": str(gpu_run["data"]), "results_dir": str(gpu_run["res"])}
    params = check_parameters(notebook.name, declared, {k: v for k, v in params.items() if k in declared})
    page = run_notebook(notebook, params, gpu_run["out"] / notebook.name, gpu_run["km"])
    assert page.metadata["papermill"]["parameters"]["profile"] == "gpu"
    errors = [o for c in page.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if study != "07_ledger":
        records = sorted(p.name for p in (gpu_run["res"] / study).glob("gpu-*.json"))
        assert records, f"{study} wrote no gpu results record"
