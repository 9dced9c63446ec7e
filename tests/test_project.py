"""The project's promises about itself: README commands, CI, conda environment, committed studies."""
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _readme_first_screen():
    text = (ROOT / "README.md").read_text()
    return text.split("\n## ", 1)[0]


def test_readme_first_screen_has_exactly_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", _readme_first_screen(), flags=re.S)
    assert len(blocks) == 2
    install, test = (b.strip() for b in blocks)
    assert "-c constraints.txt" in install and "mpstudy book" in install
    assert "pytest" in test and "\n" not in install and "\n" not in test


def test_ci_runs_the_readme_test_command():
    _, test = (b.strip() for b in re.findall(r"```bash\n(.*?)```", _readme_first_screen(), flags=re.S))
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    assert "-c constraints.txt" in ci


def test_environment_yml_matches_pyproject_and_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    constraints = [l.strip() for l in (ROOT / "constraints.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    for pin in constraints:  # the same pins as the pip install
        assert pin in pip, pin
    assert "-e .[dev]" in pip
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    names = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    design_card = {"jupyter-book", "papermill", "torch", "transformers", "tensorly", "datasets", "seaborn", "nbval"}
    assert design_card <= names


def test_committed_studies_are_executed_without_errors():
    """Every page in book/studies/ was executed (no empty code cells, no error outputs) with a real profile."""
    studies = sorted(p for p in (ROOT / "book" / "studies").glob("*.ipynb") if not p.name.startswith("."))
    assert studies, "no executed studies in book/studies/"
    toc = (ROOT / "_toc.yml").read_text()
    for path in studies:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name}: unexecuted cells"
        assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])), path.name
        params = nb["metadata"]["papermill"]["parameters"]
        assert params["profile"] in ("cpu", "gpu"), f"{path.name} was executed with profile {params['profile']}"
        assert f"book/studies/{path.stem}" in toc, f"{path.name} is not in _toc.yml"
    # the reader meets the studies in their numbered order (each beside its method chapter)
    order = [toc.index(f"book/studies/{p.stem}") for p in studies]
    assert order == sorted(order), "_toc.yml lists the studies out of their numbered order"


def test_every_template_has_a_parameters_cell_with_smoke_defaults():
    from mpstudy.profiles import PROFILES
    from mpstudy.runner import notebook_parameters

    templates = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert templates
    for path in templates:
        declared = notebook_parameters(path)
        for profile in PROFILES:
            wanted = {**PROFILES[profile]["common"], **PROFILES[profile].get(path.stem, {})}
            assert set(wanted) <= set(declared), f"{path.name}: profile {profile} sets undeclared {set(wanted) - set(declared)}"
        smoke = {**PROFILES["smoke"]["common"], **PROFILES["smoke"].get(path.stem, {})}
        for name, value in smoke.items():  # the template's defaults are the smoke profile
            assert eval(declared[name]) == value, f"{path.name}: default of {name} differs from the smoke profile"
