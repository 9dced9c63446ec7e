"""The "what ran" box the runner puts on every page it writes for the book (mpstudy.pages): the smoke
parameter cell removed, the injected one folded, the box under the title with the exact re-run command."""
import nbformat

from mpstudy.pages import BOX_TAG, dress_page, run_box

PROV = {"machine": "x86_64 2 cpus", "torch_threads": 1, "torch": "2.13.0", "transformers": "5.24.0",
        "git_commit": "0123456789abcdef"}


def _page():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'smoke'")
    params.metadata["tags"] = ["parameters", "hide-cell"]
    injected = nbformat.v4.new_code_cell("profile = 'cpu'")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Study 1"), params, injected, nbformat.v4.new_code_cell("1 + 1")]
    return nb


def test_the_box_names_what_ran_and_the_command():
    params = {"profile": "cpu", "task_name": "sst2", "seeds": [0, 1, 2], "max_steps": 300,
              "dense": {"model_name": "minilm", "seeds": [0, 1, 2], "max_train": None, "max_eval": None}}
    box = run_box("01_mpop", "cpu", params, PROV, 125.0, {"planned": 12, "done": 5, "cpu_hours": 0.81})
    assert box.startswith("```{admonition} What ran") and box.endswith("```")
    assert "**profile** `cpu`, model `minilm`" in box
    assert "`task_name` sst2; `seeds` [0, 1, 2]; `max_steps` 300; dense baselines: seeds [0, 1, 2], training rows all" in box
    assert "commit `0123456789`" in box and "this page 2.1 min" in box and "5 of 12 recorded (0.81 CPU-hours" in box
    assert "`mpstudy run notebooks/01_mpop.ipynb --profile cpu --data-dir DATA`" in box
    assert "campaign units" not in run_box("07_ledger", "cpu", {}, PROV, 6.0, None)


def test_dressing_hides_the_smoke_defaults_and_is_idempotent():
    page = dress_page(_page(), "BOX")
    assert [c.source for c in page.cells] == ["# Study 1", "BOX", "profile = 'smoke'", "profile = 'cpu'", "1 + 1"]
    assert page.cells[2].metadata["tags"] == ["parameters", "remove-cell"]
    assert page.cells[3].metadata["tags"] == ["injected-parameters", "hide-cell"]
    again = dress_page(page, "BOX 2")
    assert [c.source for c in again.cells].count("BOX") == 0 and again.cells[1].source == "BOX 2"
    assert sum(BOX_TAG in c.metadata.get("tags", []) for c in again.cells) == 1
    assert again.cells[3].metadata["tags"] == ["injected-parameters", "hide-cell"]
