"""Leaving mpstudy: merge to a plain Hugging Face model, and no directory is ever loaded wrongly.

* every registered method: compress tiny-bert -> ``mpstudy.merge`` -> ``save_pretrained`` -> plain
  ``AutoModelForSequenceClassification.from_pretrained`` gives the compressed model's logits (1e-5);
* what plain transformers cannot hold (heads removed, uneven FFN widths, int8 activations) is
  refused in one line naming ``mpstudy.save_compressed``, with the model left as it came;
* a ``save_compressed`` directory is refused by plain ``from_pretrained`` with a message naming
  ``mpstudy.load_compressed``; ``load_model`` turns a dirty load report into an error;
* the CLI: ``mpstudy compress --merge`` and ``mpstudy merge DIR --out DIR``.
"""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn

import mpstudy
from mpstudy import compress, load_compressed, load_model, merge, save_compressed
from mpstudy.cli import main
from mpstudy.export import MERGED_MARKER
from mpstudy.layers.base import CompressedLayer
from mpstudy.measure import dummy_batch
from mpstudy.methods import METHODS
from test_roundtrip_all_methods import _compress  # one tiny budget per registered method

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _plain_reload(model: nn.Module, path) -> nn.Module:
    """``save_pretrained`` then plain transformers' ``from_pretrained``, which must report a clean load."""
    model.save_pretrained(path)
    reloaded, report = transformers.AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True)
    assert not any(report.values()), report
    return reloaded.eval()


def _compressed(method: str):
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    if method == "prune-heads":  # FFN neurons only, the same count per layer: what plain BERT can hold (heads: below)
        compress(model, method, targets="ffn", keep=0.5)
    else:
        _compress(model, method)
    return model.eval(), dummy_batch(tokenizer, batch_size=4, seq_len=16)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_merged_model_reloads_in_plain_transformers_with_the_same_logits(tmp_path, method):
    model, batch = _compressed(method)
    expected = _logits(model, batch)
    merged = merge(model, dequantize=method == "int8")
    assert merged is model
    left = [n for n, m in merged.named_modules() if isinstance(m, CompressedLayer) or type(m).__name__ == "Int8Linear"
            or hasattr(m, "weight_mask")]
    assert left == []
    reloaded = _plain_reload(merged, tmp_path / "plain")
    got = _logits(reloaded, batch)
    assert got.dtype == expected.dtype
    if method == "int8":  # float32 weights now; the int8 model also quantized its activations
        assert torch.allclose(got, _logits(merged, batch), atol=1e-5)
        assert float((got - expected).abs().max()) < 0.05 * float(expected.abs().max())
    else:
        assert torch.allclose(got, expected, atol=1e-5), f"{method}: max |diff| {float((got - expected).abs().max())}"
    if method == "prune-heads":
        assert reloaded.config.intermediate_size == 64  # 128 neurons, half kept in every layer


def test_removed_heads_are_refused_and_the_model_left_as_it_came():
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "prune-heads", targets="attention", keep=0.5)
    compress(model, "svd", targets="ffn", rank=4)
    batch = dummy_batch(tokenizer, batch_size=2, seq_len=8)
    before = _logits(model.eval(), batch)
    with pytest.raises(ValueError, match=r"2 of its 4 attention heads left.*mpstudy\.save_compressed") as err:
        merge(model)
    assert "\n" not in str(err.value)
    assert sum(isinstance(m, CompressedLayer) for m in model.modules()) == 4  # the SVD layers were put back
    assert torch.equal(_logits(model, batch), before)


def test_ffn_widths_that_differ_between_layers_are_refused():
    model, _ = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "prune-heads", targets=r"re:layer\.0\.(intermediate|output)\.dense$", keep=0.5)
    with pytest.raises(ValueError, match=r"layer\.0\.intermediate\.dense\.bias is \(64,\) .* holds \(128,\).*save_compressed"):
        merge(model)


def test_int8_is_refused_unless_dequantized():
    model, _ = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "svd", rank=4)
    compress(model, "int8")
    with pytest.raises(ValueError, match=r"int8 layers\) computes in int8.*dequantize=True.*save_compressed"):
        merge(model)
    merge(model, dequantize=True)
    assert not any(type(m).__name__ == "Int8Linear" for m in model.modules())


def test_torch_pruning_masks_and_parametrizations_become_permanent(tmp_path):
    from torch.nn.utils import parametrize

    from mpstudy.prune import prune_linear

    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    layer0 = model.bert.encoder.layer[0]
    prune_linear(layer0.intermediate.dense, 0.3)  # torch.nn.utils.prune: weight_orig * weight_mask

    class Halve(nn.Module):
        def forward(self, w):
            return w / 2

    parametrize.register_parametrization(layer0.output.dense, "weight", Halve())
    batch = dummy_batch(tokenizer, batch_size=2, seq_len=8)
    expected = _logits(model.eval(), batch)
    merge(model)
    assert not hasattr(layer0.intermediate.dense, "weight_mask") and not parametrize.is_parametrized(layer0.output.dense)
    assert abs(float((layer0.intermediate.dense.weight != 0).float().mean()) - 0.3) < 0.01
    assert torch.allclose(_logits(_plain_reload(model, tmp_path / "plain"), batch), expected, atol=1e-5)


def test_compress_then_lora_trains_and_merges_to_a_plain_model(tmp_path):
    """compress (SVD) -> LoRA on the Linears inside the factorized layers -> one training step -> merge."""
    pytest.importorskip("peft")
    from mpstudy.lora import apply_lora, lora_target_names

    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "svd", rank=4)
    assert lora_target_names(model, "query")[:2] == ["bert.encoder.layer.0.attention.self.query.first",
                                                     "bert.encoder.layer.0.attention.self.query.second"]
    peft_model = apply_lora(model, rank=2, targets="query,value", dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n or "pooler" in n for n in trainable)
    batch = dummy_batch(tokenizer, batch_size=4, seq_len=8)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    peft_model.train()
    peft_model(**batch, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()  # lora_B starts at zero: after a step the adapters change the model
    assert any(float(p.detach().abs().max()) > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    expected = _logits(peft_model.eval(), batch)
    merged = merge(peft_model)
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert torch.allclose(_logits(_plain_reload(merged, tmp_path / "plain"), batch), expected, atol=1e-5)


def test_lora_refuses_a_layer_with_no_linear_inside():
    pytest.importorskip("peft")
    from mpstudy.lora import apply_lora

    model, _ = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "mpo", targets="query", max_bond=4)
    with pytest.raises(ValueError, match=r"query \(MPOLinear\) has none inside"):
        apply_lora(model, targets="query")


def test_plain_from_pretrained_refuses_a_save_compressed_directory(tmp_path):
    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "svd", rank=4)
    save_compressed(model, tmp_path / "svd", tokenizer=tokenizer)
    for cls in (transformers.AutoModelForSequenceClassification, transformers.BertForSequenceClassification,
                transformers.AutoModel):
        with pytest.raises(ValueError, match=r"mpstudy\.load_compressed"):
            cls.from_pretrained(tmp_path / "svd")
    reloaded = load_compressed(tmp_path / "svd")
    assert not hasattr(reloaded.config, "transformers_weights")  # a later save_pretrained writes a clean config
    batch = dummy_batch(tokenizer, batch_size=2, seq_len=8)
    assert torch.equal(_logits(reloaded, batch), _logits(model.eval(), batch))


def test_load_model_refuses_a_load_that_leaves_weights_random(tmp_path):
    from safetensors.torch import load_file, save_file

    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "svd", rank=4)
    model.save_pretrained(tmp_path / "factorized")  # what the issue found loading silently with random layers
    tokenizer.save_pretrained(tmp_path / "factorized")
    with pytest.raises(ValueError, match=r"24 weights missing from the checkpoint.*attention\.output\.dense\.bias.*"
                                         r"36 checkpoint weights unused.*\.first\.weight.*mpstudy\.save_compressed"):
        load_model(tmp_path / "factorized", task="synthetic-cls")

    plain, _ = load_model("tiny-bert", task="synthetic-cls", seed=1)
    plain.save_pretrained(tmp_path / "classifier")  # a fine-tuned classifier: its head is part of the checkpoint
    tokenizer.save_pretrained(tmp_path / "classifier")
    state = load_file(tmp_path / "classifier" / "model.safetensors")
    assert torch.equal(load_model(tmp_path / "classifier", task="synthetic-cls")[0].classifier.weight, state["classifier.weight"])
    del state["classifier.weight"]
    save_file(state, tmp_path / "classifier" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"1 weights missing .*\(classifier\.weight\)"):
        load_model(tmp_path / "classifier", task="synthetic-cls")


def test_a_base_encoder_still_gets_a_fresh_head():
    model, _ = load_model("minilm", task="stsb")
    assert model.classifier.out_features == 1


def test_cli_compress_merge_and_merge_command(tmp_path, capsys):
    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = run("compress", "tiny-bert", "--method", "svd", "--rank", "4", "--task", "synthetic-cls",
                       "--out", tmp_path / "merged", "--merge")
    assert code == 0, err
    assert json.loads((tmp_path / "merged" / MERGED_MARKER).read_text())["source"]["method"] == "svd"
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert plain.bert.encoder.layer[0].attention.self.query.weight.shape == (64, 64)
    assert torch.linalg.matrix_rank(plain.bert.encoder.layer[0].attention.self.query.weight) == 4

    code, _, err = run("compress", "tiny-bert", "--method", "mpo", "--max-bond", "4", "--task", "synthetic-cls",
                       "--out", tmp_path / "mpo")
    assert code == 0, err
    code, out, err = run("merge", tmp_path / "mpo", "--out", tmp_path / "mpo-plain")
    assert code == 0, err
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "mpo-plain")
    batch = dummy_batch(tokenizer, batch_size=2, seq_len=8)
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "mpo-plain").eval()
    assert torch.allclose(_logits(plain, batch), _logits(load_compressed(tmp_path / "mpo"), batch), atol=1e-5)

    code, _, err = run("compress", "tiny-bert", "--method", "prune-heads", "--keep", "0.5", "--out", tmp_path / "heads")
    assert code == 0, err
    code, _, err = run("merge", tmp_path / "heads", "--out", tmp_path / "heads-plain")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mpstudy.save_compressed" in err
    assert not (tmp_path / "heads-plain").exists()
    code, _, err = run("merge", tmp_path / "mpo-plain", "--out", tmp_path / "again")
    assert code == 2 and "is not a saved mpstudy model" in err


def test_merge_is_public():
    assert mpstudy.merge is merge and "merge" in mpstudy.__all__


def test_load_compressed_takes_a_hub_id_from_the_local_cache_offline(tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's cache (a pre-populated one, offline), no network."""
    import shutil

    from huggingface_hub import constants

    model, tokenizer = load_model("tiny-bert", task="synthetic-cls", seed=0)
    compress(model, "svd", rank=4)
    save_compressed(model, tmp_path / "saved", tokenizer=tokenizer)
    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-bert-svd"  # huggingface_hub's cache layout
    shutil.copytree(tmp_path / "saved", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import; the test sets it after
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    batch = dummy_batch(tokenizer, batch_size=2, seq_len=8)
    assert torch.equal(_logits(load_compressed("someone/tiny-bert-svd"), batch), _logits(model.eval(), batch))
    with pytest.raises(FileNotFoundError, match=r"'someone/absent' is neither a local directory nor .*not in the hub cache"):
        load_compressed("someone/absent")


def test_a_compressed_embedding_tied_to_a_dense_output_layer_is_refused():
    """T5 ties its LM head to the shared embedding: compressing the embedding leaves the head dense,
    which a plain reload would re-tie (other logits), so merge refuses and leaves the model as it came."""
    model, _ = load_model("tiny-t5", task="synthetic-seq2seq", seed=0)
    compress(model, "mpo", targets="word_embeddings", max_bond=4)
    with pytest.raises(ValueError, match=r"ties the output layer to the input embeddings.*save_compressed"):
        merge(model)
    assert type(model.get_input_embeddings()).__name__ == "MPOEmbedding"
