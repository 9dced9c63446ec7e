"""What an executed study page tells its reader before any result: the "what ran" box.

The runner (:func:`mpstudy.runner.execute_plan`) dresses every page it writes for the book:

* the template's ``parameters`` cell, which holds the smoke defaults nbval runs, is removed from the
  page (``remove-cell``): on a cpu or gpu page those values never ran and only mislead;
* papermill's ``injected-parameters`` cell, the values that did run, is folded (``hide-cell``);
* a box is inserted under the page's title: the profile, the model, task(s) and seeds, the
  commit, machine and threads, the page's wall time and its campaign units (done of planned, with
  their CPU-hours), and the exact command that re-runs it, with how to change a parameter.

Pure notebook editing (nbformat dictionaries), so it is tested without executing anything.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["BOX_TAG", "run_box", "dress_page"]

#: the tag of the inserted box cell (a second dressing replaces it instead of adding another)
BOX_TAG = "mpstudy-run-box"

#: parameters named in the box when the study has them, in this order
_SHOWN = ("model_name", "task_name", "tasks", "seeds", "keeps", "keep", "methods", "modes", "max_train", "max_eval",
          "epochs", "max_steps", "recovery_steps", "steps")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_box(stem: str, profile: str, params: Mapping[str, Any], provenance: Mapping[str, Any], seconds: float,
            coverage: Mapping[str, Any] | None = None) -> str:
    """The box's markdown (a MyST ``admonition``) for the page of study ``stem``.

    Args:
        stem: the notebook's name (``"01_mpop"``).
        profile: the profile the page ran with.
        params: the parameters papermill injected.
        provenance: :func:`mpstudy.records.provenance` of the run (commit, machine, threads, versions).
        seconds: the page's wall time.
        coverage: :func:`mpstudy.campaign.coverage` of the study, or None when it has no units.
    """
    dense = params.get("dense") if isinstance(params.get("dense"), Mapping) else None
    model = params.get("model_name") or (dense or {}).get("model_name")
    lines = [f"- **profile** `{profile}`" + (f", model `{model}`" if model else "")]
    shown = [f"`{k}` {_value(params[k])}" for k in _SHOWN if k in params and k != "model_name" and params[k] is not None]
    if dense:
        shown.append(f"dense baselines: seeds {_value(dense.get('seeds'))}, training rows "
                     f"{'all' if dense.get('max_train') is None else dense['max_train']}, dev rows "
                     f"{'all' if dense.get('max_eval') is None else dense['max_eval']}")
    if shown:
        lines.append("- **ran with** " + "; ".join(shown) + " (every parameter: the folded cell below)")
    lines.append(f"- **where** {provenance.get('machine', '?')}, {provenance.get('torch_threads', '?')} torch thread(s); "
                 f"torch {provenance.get('torch', '?')}, transformers {provenance.get('transformers', '?')}; "
                 f"commit `{str(provenance.get('git_commit') or 'unknown')[:10]}`")
    when = f"- **time** this page {seconds / 60:.1f} min"
    if coverage and coverage.get("planned"):
        when += (f"; its campaign units {coverage['done']} of {coverage['planned']} recorded "
                 f"({coverage['cpu_hours']:.2f} CPU-hours, in `results/{stem}/units/`)")
    lines.append(when)
    command = f"mpstudy run notebooks/{stem}.ipynb --profile {profile} --data-dir DATA"
    body = "\n".join(lines)
    return (f"```{{admonition}} What ran\n:class: note\n{body}\n\nRe-run it (recorded units are read back, "
            f"missing ones computed): `{command}`; change a parameter with `-p NAME VALUE`, e.g. "
            f"`-p seeds '[0]'` (`papermill --help-notebook notebooks/{stem}.ipynb` lists them).\n```")


def _tags(cell: dict[str, Any]) -> list[str]:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def dress_page(page: dict[str, Any], box: str) -> dict[str, Any]:
    """Hide the template's parameters, fold the injected ones, and put ``box`` under the title (in place)."""
    import nbformat

    cells = page["cells"]
    cells[:] = [c for c in cells if BOX_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in cells:
        tags = _tags(cell)
        if "parameters" in tags:
            tags[:] = [t for t in tags if t != "hide-cell"] + ["remove-cell"]
        elif "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
    title = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), -1)
    cell = nbformat.v4.new_markdown_cell(box)
    cell["metadata"]["tags"] = [BOX_TAG]
    cells.insert(title + 1, cell)
    return page
