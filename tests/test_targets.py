"""Architecture presets find their targets on every tiny config; bad targets fail clearly."""
import pytest
from torch import nn

from mpstudy import load_model
from mpstudy.targets import ROLE_GROUPS, group_targets, resolve_targets

# (spec, task, expected number of matrices per role): from the tiny configs' layer counts
PRESET_CASES = [
    ("tiny-bert", "synthetic-cls", {"query": 2, "key": 2, "value": 2, "attention_output": 2, "ffn_in": 2, "ffn_out": 2}),
    # ALBERT shares one layer: its weights exist (and are compressed) once
    ("tiny-albert", "synthetic-cls", {"query": 1, "key": 1, "value": 1, "attention_output": 1, "ffn_in": 1, "ffn_out": 1}),
    # encoder self-attention (2) + decoder self- and cross-attention (2 + 2)
    ("tiny-t5", "synthetic-seq2seq", {"query": 6, "key": 6, "value": 6, "attention_output": 6, "ffn_in": 4, "ffn_out": 4}),
    ("tiny-marian", "synthetic-seq2seq", {"query": 6, "key": 6, "value": 6, "attention_output": 6, "ffn_in": 4, "ffn_out": 4}),
]


@pytest.fixture(scope="module")
def models():
    return {spec: load_model(spec, task=task)[0] for spec, task, _ in PRESET_CASES}


@pytest.mark.parametrize("spec,task,expected", PRESET_CASES, ids=[c[0] for c in PRESET_CASES])
def test_preset_finds_every_role(models, spec, task, expected):
    model = models[spec]
    found = resolve_targets(model, "all-linear")
    counts = {role: sum(t.role == role for t in found) for role in expected}
    assert counts == expected
    assert all(isinstance(t.module, nn.Linear) for t in found)
    assert all(t.layer is not None for t in found)
    emb = resolve_targets(model, "word_embeddings")
    assert len(emb) == 1 and isinstance(emb[0].module, nn.Embedding)


def test_groups_and_regex(models):
    model = models["tiny-bert"]
    qkv = resolve_targets(model, "qkv")
    assert [t.role for t in qkv[:3]] == ["query", "key", "value"]
    assert len(group_targets(qkv, "layer")) == 2  # two layers, each [Q, K, V]
    assert len(group_targets(qkv, "role")) == 3  # all queries, all keys, all values
    assert len(group_targets(qkv, "matrix")) == 6
    custom = resolve_targets(model, r"re:layer\.0\.attention\.self\.query$")
    assert [t.name for t in custom] == ["bert.encoder.layer.0.attention.self.query"]
    stacks = {t.stack for t in resolve_targets(models["tiny-t5"], "query")}
    assert stacks == {"encoder", "decoder"}
    assert set(ROLE_GROUPS["all-linear"]) >= set(ROLE_GROUPS["attention"])


def test_bad_targets(models):
    model = models["tiny-bert"]
    with pytest.raises(ValueError, match="unknown target 'querry'"):
        resolve_targets(model, "querry")
    with pytest.raises(ValueError, match=r"matched no .* module"):
        resolve_targets(model, "re:does\\.not\\.exist")
    with pytest.raises(ValueError, match="targets is empty"):
        resolve_targets(model, "")
    with pytest.raises(ValueError, match="grouping must be one of"):
        group_targets(resolve_targets(model, "qkv"), "bogus")
    with pytest.raises(ValueError, match="no target preset for model_type"):
        resolve_targets(nn.Sequential(nn.Linear(2, 2)), "query")
