"""The scratch-trained translation model: its tokenizer, its T5 config, its loss, and its cache.

Everything runs on the synthetic seq2seq task (a few hundred rows) and the "tiny" T5 size, so the
module takes seconds; the real Multi30K run is ``bench/train_translation.py``.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoTokenizer

from mpstudy.cache import weights_hash
from mpstudy.models import load_model
from mpstudy.tasks import load_task
from mpstudy.train import TrainConfig
from mpstudy.translation import (LabelSmoothedLoss, scratch_translation_model, t5_config, t5_param_groups,
                                 train_tokenizer, translation_key)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {"source": "A man in an orange hat is looking at something.", "target": "Ein Mann mit einem orangefarbenen Hut starrt etwas an."},
    {"source": "Two dogs play in the snow.", "target": "Zwei Hunde spielen im Schnee."},
    {"source": "A little girl climbs into a wooden playhouse.", "target": "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."},
    {"source": "People are sitting on a bench, talking.", "target": "Leute sitzen auf einer Bank und unterhalten sich."},
] * 60  # 240 rows: enough merges for a few hundred tokens

#: a few training steps of the tiny model, a greedy-BLEU evaluation on 8 dev rows at the end
TINY = TrainConfig(lr=3e-3, max_steps=4, batch_size=16, eval_batch_size=8, max_new_tokens=6, warmup_ratio=0.0,
                   progress=False, bucket_batches=2)


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-seq2seq", max_train=96, max_eval=8)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(ROWS, vocab_size=400)


def test_tokenizer_has_t5_specials_and_round_trips_text(tokenizer, tmp_path):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert 100 < len(tokenizer) <= 400  # the trainer stops when the rows have no more merges
    assert {"▁snow", "▁Mann", "▁Hunde"} <= set(tokenizer.get_vocab())  # whole frequent words
    texts = [r[side] for r in ROWS[:4] for side in ("source", "target")] + ["Zwölf Straßen? Ja!"]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == 1 and ids.count(1) == 1  # T5 ends every sequence (source and target) with </s>
        assert 2 not in ids  # "?", "ö", "ß" are in the base alphabet though no training row has them
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer(text_target=texts[1])["input_ids"] == tokenizer(texts[1])["input_ids"]
    # punctuation is split off before merging: "snow." is "▁snow" + "."
    assert tokenizer.convert_ids_to_tokens(tokenizer("the snow.")["input_ids"])[-3:] == ["▁snow", ".", "</s>"]

    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert (again.pad_token_id, again.eos_token_id, again.unk_token_id) == (0, 1, 2)
    batch = tokenizer(texts)["input_ids"]
    assert again(texts)["input_ids"] == batch
    assert again.batch_decode(batch, skip_special_tokens=True) == texts


def test_tokenizer_is_deterministic(tokenizer):
    """Training again gives the same bytes, so a cached model's recipe rebuilds its tokenizer. Each
    training draws new hash-map seeds (tokenizers is Rust: every map gets fresh random keys), which
    is what made the Unigram trainer give another vocabulary on every call; BPE breaks its ties by
    the pair, not by iteration order."""
    first = json.loads(tokenizer.backend_tokenizer.to_str())
    for _ in range(3):
        assert json.loads(train_tokenizer(ROWS, vocab_size=400).backend_tokenizer.to_str()) == first


def test_tokenizer_reads_only_the_training_split(task):
    unseen = "Xylophon"  # a word of no training row: in the dev split only it would still be split up
    dev = [{"source": f"{unseen} {unseen}", "target": unseen}] * 50
    tok = train_tokenizer(dataclasses.replace(task, dev=dev), vocab_size=300)
    assert tok.get_vocab() == train_tokenizer(task, vocab_size=300).get_vocab()
    assert "▁" + unseen not in tok.get_vocab()


@pytest.mark.parametrize("bad", [dict(vocab_size=10), dict(vocab_size=True), dict(max_rows=0)])
def test_tokenizer_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        train_tokenizer(ROWS, **bad)


def test_t5_config():
    cfg = t5_config("small", vocab_size=8000)
    assert (cfg.d_model, cfg.num_layers, cfg.num_decoder_layers, cfg.num_heads, cfg.d_ff) == (256, 3, 3, 4, 1024)
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id, cfg.tie_word_embeddings) == (0, 1, 0, True)
    with pytest.raises(ValueError, match="size must be one of"):
        t5_config("huge")


def test_param_groups_give_the_embedding_its_own_rate():
    import transformers

    transformers.set_seed(0)
    model = transformers.T5ForConditionalGeneration(t5_config("tiny", 300))
    groups = t5_param_groups(model, lr=1e-3, weight_decay=0.01, embedding_lr_scale=20.0)
    shared = model.shared.weight
    assert shared is model.lm_head.weight  # tied: one tensor is the input and the output embedding
    assert groups[-1] == {"params": [shared], "weight_decay": 0.0, "lr": pytest.approx(2e-2)}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(set(seen)) == len(seen)
    # the other rates follow each matrix's initial std (Adafactor's relative steps): q at d_kv**-0.5, wo at
    # sqrt(d_model / d_ff), the rest at lr; oracle: the std the random initialisation actually drew
    ref = model.config.d_model ** -0.5
    for name, p in model.named_parameters():
        if p is shared:
            continue
        group = next(g for g in groups if any(q is p for q in g["params"]))
        if p.dim() < 2 or p.numel() < 1024:  # norms; the 64 relative-position biases (too few for the oracle)
            assert group["lr"] == 1e-3, name
        else:  # >= 1,024 draws: the sample std is within ~2 % of the init std
            assert group["lr"] == pytest.approx(1e-3 * p.detach().std().item() / ref, rel=0.1), name
        assert group["weight_decay"] == (0.01 if p.dim() >= 2 else 0.0)
    q = model.encoder.block[0].layer[0].SelfAttention.q.weight
    assert next(g["lr"] for g in groups if any(x is q for x in g["params"])) == pytest.approx(1e-3 / 4)  # d_kv 16
    with pytest.raises(ValueError, match="embedding_lr_scale"):
        t5_param_groups(model, lr=1e-3, embedding_lr_scale=0)


def test_label_smoothed_loss_matches_its_formula(tokenizer):
    import transformers

    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(t5_config("tiny", len(tokenizer))).eval()
    enc = tokenizer(["Two dogs play.", "A man sits on a bench."], padding=True, return_tensors="pt")
    labels = tokenizer(text_target=["Zwei Hunde.", "Ein Mann sitzt auf einer Bank."], padding=True,
                       return_tensors="pt")["input_ids"]
    labels[labels == 0] = -100
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    plain, logs = LabelSmoothedLoss(0.0)(model, batch, [0, 1])
    assert plain.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)  # the model's own loss
    eps = 0.1
    smoothed, logs = LabelSmoothedLoss(eps)(model, batch, [0, 1])
    logp = model(**batch).logits.log_softmax(-1)[labels != -100]  # [tokens, V]
    nll = -logp.gather(1, labels[labels != -100][:, None]).mean()
    assert smoothed.item() == pytest.approx(((1 - eps) * nll - eps * logp.mean(-1).mean()).item(), rel=1e-5)
    assert logs["nll"] == pytest.approx(nll.item(), rel=1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        LabelSmoothedLoss(1.0)


def test_scratch_model_trains_caches_and_is_deterministic(task, tmp_path):
    kw = dict(size="tiny", config=TINY, task=task, vocab_size=300)
    model, tok, info = scratch_translation_model(seed=0, cache_dir=tmp_path / "a", **kw)
    assert not info["cached"] and info["result"]["steps"] == 4 and "bleu" in info["dev_metrics"]
    assert info["key_payload"]["spec"]["train"]["seed"] == 0
    history = info["result"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    trained = weights_hash(model)
    # the second call loads the cached directory: same weights, same tokenizer, no training
    again, tok2, info2 = scratch_translation_model(seed=0, cache_dir=tmp_path / "a", **kw)
    assert info2["cached"] and info2["cache_key"] == info["cache_key"] and weights_hash(again) == trained
    assert tok2.get_vocab() == tok.get_vocab()
    # load_model reads the cached directory; the model generates
    loaded, _ = load_model(info["path"], task=task)
    assert weights_hash(loaded) == trained
    out = loaded.generate(**tok(["red cat"], return_tensors="pt"), max_new_tokens=4)
    assert out.shape[0] == 1 and out[0, 0].item() == 0  # decoding starts from <pad>
    # determinism: trained again from scratch elsewhere, the same seed gives the same weights
    fresh, _, info3 = scratch_translation_model(seed=0, cache_dir=tmp_path / "b", **kw)
    assert not info3["cached"] and weights_hash(fresh) == trained
    # another seed, or other training rows, is another model
    other, _, info4 = scratch_translation_model(seed=1, cache_dir=tmp_path / "a", **kw)
    assert not info4["cached"] and info4["cache_key"] != info["cache_key"] and weights_hash(other) != trained
    rows = task.train[:-1] + [{"source": "one more cat", "target": "noch eine Katze"}]
    changed = dataclasses.replace(task, train=rows)
    assert translation_key(changed, "tiny", 300, dataclasses.replace(TINY, seed=0), 0.1, 0.1)[0] != info["cache_key"]
    assert translation_key(task, "tiny", 300, dataclasses.replace(TINY, seed=0), 0.1, 0.1)[0] == info["cache_key"]


def test_scratch_model_refuses_a_classification_task(tmp_path):
    with pytest.raises(ValueError, match="seq2seq"):
        scratch_translation_model(task=load_task("synthetic-cls"), size="tiny", config=TINY, cache_dir=tmp_path)
