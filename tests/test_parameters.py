"""Study parameters are typed by the notebooks' ``parameters`` cells, and every profile's values fit them.

``mpstudy.parameters`` reads the annotations papermill shows (``papermill --help-notebook``), types
``-p`` texts by them, and checks a whole parameter set before a run starts.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mpstudy.parameters import ParamType, check_parameters, coerce, declared_parameters, parse_text, parse_type, _Mismatch
from mpstudy.profiles import PROFILE_NAMES, get_profile, shrunk

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("text,shown", [
    ("int", "int"), ("None", "Any"), ("", "Any"), ("list[float]", "list[float]"), ("Optional[int]", "Optional[int]"),
    ("Union[list[int], dict[str, list[int]]]", "Union[list[int], dict[str, list[int]]]"), ("dict", "dict"),
    ("'Optional[str]'", "Optional[str]"),
])
def test_parse_type(text, shown):
    assert str(parse_type(text)) == shown


@pytest.mark.parametrize("text,message", [
    ("integer", "unknown type 'integer'"), ("list[int", "unclosed '['"), ("Optional", "Optional takes 1 type arguments, got 0"),
    ("int | None", "cannot read type annotation"), ("dict[str]", "dict takes 0 or 2 type arguments, got 1"), ("int]", "unexpected ']'"),
])
def test_parse_type_errors_name_the_annotation(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("|", r"\|")):
        parse_type(text)


@pytest.mark.parametrize("kind,value,expected", [
    ("float", 1, 1), ("float", "1e-3", 0.001), ("float", 2.5, 2.5), ("Optional[int]", None, None),
    ("Union[float, dict[str, float]]", {"key": 1e-3}, {"key": 0.001}), ("list[list]", [["key", 3, "x"]], [["key", 3, "x"]]),
    ("dict[str, list[dict]]", {"svd": [{"keep": 0.5}]}, {"svd": [{"keep": 0.5}]}), ("Any", object, object),
])
def test_coerce_accepts(kind, value, expected):
    assert coerce(value, parse_type(kind)) == expected


@pytest.mark.parametrize("kind,value", [
    ("int", True), ("int", 1.0), ("float", True), ("float", "fast"), ("str", 3), ("bool", 1), ("list[int]", [1, "2"]),
    ("dict[str, int]", {"a": 0.5}), ("Optional[int]", "3"), ("list[float]", 0.5),
])
def test_coerce_refuses(kind, value):
    with pytest.raises(_Mismatch):
        coerce(value, parse_type(kind))


@pytest.mark.parametrize("kind,text,expected", [
    ("float", "1e-3", 0.001), ("float", "3", 3), ("str", "yes", "yes"), ("str", "translate English to German: ", "translate English to German: "),
    ("Optional[str]", "null", None), ("Optional[str]", "None", None), ("Optional[int]", "None", None), ("Optional[int]", "64", 64),
    ("list[float]", "[0.5, 1e-1]", [0.5, 0.1]), ("bool", "true", True), ("dict[str, int]", "{key: 3}", {"key": 3}),
])
def test_parse_text_by_declared_type(kind, text, expected):
    value = parse_text(text, parse_type(kind))
    assert value == expected and type(value) is type(expected)


def test_check_parameters_is_one_line_naming_notebook_parameter_value_and_type():
    mpop = declared_parameters(ROOT / "notebooks" / "01_mpop.ipynb")
    assert check_parameters("01_mpop.ipynb", mpop, {"lr": "2e-5"})["lr"] == 2e-5
    declared = declared_parameters(ROOT / "notebooks" / "00_offline_svd.ipynb")
    with pytest.raises(ValueError, match=r"^00_offline_svd.ipynb: parameter keeps must be of type list\[float\], "
                                         r"got \[0.5, 'half'\] \(list\)$"):
        check_parameters("00_offline_svd.ipynb", declared, {"keeps": [0.5, "half"]})
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['ratios'\]"):
        check_parameters("00_offline_svd.ipynb", declared, {"ratios": [0.5]})


@pytest.mark.parametrize("notebook", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_every_parameter_is_annotated_and_every_profile_fits(notebook):
    """What `mpstudy reproduce` checks before it runs anything, for every study x profile (and the gpu
    profile's dry run, tests/test_gpu_profile.py), so a wrong value in profiles.py fails here first."""
    declared = declared_parameters(notebook)
    untyped = [name for name, d in declared.items() if d.type == ParamType("Any")]
    assert not untyped, f"{notebook.name}: annotate {untyped} (e.g. `lr: float = 1e-3  # ...`)"
    for profile in PROFILE_NAMES:
        params = get_profile(profile, notebook.stem)
        assert check_parameters(notebook.name, declared, params) == params  # fits as it is: nothing converted
    check_parameters(notebook.name, declared, shrunk(get_profile("gpu", notebook.stem)))
