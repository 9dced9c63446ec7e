"""Batches: the collate is the tokenizer's own batched call, every row is tokenized once (a cache keyed on
what produced it), length buckets cover every row once and pad less, and bucketed evaluation puts each
prediction back on its row."""
import copy
import dataclasses

import pytest
import torch

from mpstudy import TrainConfig, load_model, load_task, train
from mpstudy.tasks import Task, clear_token_cache, make_collate, token_cache_info
from mpstudy.train import batch_plan, iterate_batches, predict


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny-bert", task="synthetic-cls")[1]


@pytest.fixture(scope="module")
def task():
    return load_task("synthetic-cls", max_train=256, max_eval=64)


def _pairs_task(kind: str = "classification") -> Task:
    """Sentence pairs of varied length, one long enough to be truncated."""
    rows = [{"text_a": "the film is " + "very " * i + "good", "text_b": "a b c"[: 2 * (i % 3) + 1] + " x" * (9 - i),
             "label": float(i % 5) if kind == "regression" else i % 2} for i in range(10)]
    rows[3]["text_a"] = "long " * 80
    return Task("stsb" if kind == "regression" else "mrpc", kind, 1 if kind == "regression" else 2, rows, rows[:4],
                "pearson" if kind == "regression" else "accuracy")


def _tokenizer_batch(task: Task, tokenizer, rows: list[dict], max_length: int) -> dict[str, torch.Tensor]:
    """What the collate must return: the tokenizer's own batched call, padded to the longest row."""
    enc = {"truncation": True, "max_length": max_length, "padding": "longest", "return_tensors": "pt"}
    if task.is_seq2seq:
        src = tokenizer([r["source"] for r in rows], **enc)
        tgt = tokenizer(text_target=[r["target"] for r in rows], **enc)
        return {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"],
                "labels": tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)}
    b = [r["text_b"] for r in rows] if rows[0].get("text_b") is not None else None
    out = dict(tokenizer([r["text_a"] for r in rows], b, **enc))
    out["labels"] = torch.tensor([r["label"] for r in rows],
                                 dtype=torch.float32 if task.kind == "regression" else torch.long)
    return out


def _assert_same(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]), k


@pytest.mark.parametrize("kind", ["classification", "regression", "pairs", "seq2seq", "left-padding"])
def test_collate_is_the_tokenizers_batched_call(kind, tokenizer):
    tok = tokenizer
    if kind == "seq2seq":
        t = load_task("synthetic-seq2seq", max_train=24)
    elif kind in ("pairs", "regression"):
        t = _pairs_task("regression" if kind == "regression" else "classification")
    else:
        t = load_task("synthetic-cls", max_train=24)
    if kind == "left-padding":
        tok = copy.deepcopy(tokenizer)
        tok.padding_side = "left"
    for max_length in (8, 64):
        collate = make_collate(t, tok, max_length=max_length)
        for start in range(0, len(t.train), 7):
            rows = t.train[start:start + 7]
            _assert_same(collate(rows), _tokenizer_batch(t, tok, rows, max_length))


def test_rows_are_tokenized_once_and_the_cache_cannot_go_stale(tokenizer, task):
    """Hits on the second pass; a miss for another max_length, an edited row, another tokenizer."""
    import copy

    clear_token_cache()
    rows = task.train[:32]
    make_collate(task, tokenizer, max_length=32)(rows)
    assert token_cache_info()["misses"] == 32 and token_cache_info()["hits"] == 0
    make_collate(task, tokenizer, max_length=32)(rows)  # a new collate of the same (tokenizer, length)
    assert token_cache_info()["misses"] == 32 and token_cache_info()["hits"] == 32
    make_collate(task, tokenizer, max_length=16)(rows)
    assert token_cache_info()["misses"] == 64
    edited = [dict(r) for r in rows]
    edited[5]["text_a"] = "an entirely new sentence"
    batch = make_collate(task, tokenizer, max_length=32)(edited)
    assert token_cache_info()["misses"] == 65  # only the edited row
    _assert_same(batch, _tokenizer_batch(task, tokenizer, edited, 32))
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["zzfreshtoken"])
    rows_new = [dict(rows[0], text_a="zzfreshtoken is good")]
    batch = make_collate(task, other, max_length=32)(rows_new)
    assert token_cache_info()["misses"] == 66  # another tokenizer: its own store
    assert batch["input_ids"][0, 1].item() == other.convert_tokens_to_ids("zzfreshtoken")
    clear_token_cache()
    assert token_cache_info() == {"stores": 0, "rows": 0, "hits": 0, "misses": 0}


def test_plain_plan_is_the_old_shuffle():
    """Without buckets the plan is what the loop always drew: consecutive slices of one randperm, so
    runs from before length bucketing are reproduced exactly."""
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    order = torch.randperm(70, generator=g2).tolist()
    assert batch_plan(70, 16, g1) == [order[s:s + 16] for s in range(0, 70, 16)]
    assert batch_plan(5, 2) == [[0, 1], [2, 3], [4]]


def test_bucketed_plan_covers_every_row_once_and_sorts_within_chunks():
    lengths = [(7 * i) % 23 + 1 for i in range(100)]
    plan = batch_plan(100, 8, torch.Generator().manual_seed(0), lengths, bucket=4)
    assert sorted(i for b in plan for i in b) == list(range(100))
    assert sorted(len(b) for b in plan) == [4] + [8] * 12
    again = batch_plan(100, 8, torch.Generator().manual_seed(0), lengths, bucket=4)
    other = batch_plan(100, 8, torch.Generator().manual_seed(1), lengths, bucket=4)
    assert plan == again and plan != other
    # within a batch the lengths are close: padding is far below a plain shuffle's
    pad = lambda p: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in p)  # noqa: E731
    assert pad(plan) < 0.35 * pad(batch_plan(100, 8, torch.Generator().manual_seed(0)))
    # consecutive epochs (one generator) mix differently
    g = torch.Generator().manual_seed(0)
    assert batch_plan(100, 8, g, lengths, bucket=4) != batch_plan(100, 8, g, lengths, bucket=4)
    with pytest.raises(ValueError, match="bucket must be"):
        batch_plan(100, 8, None, lengths, bucket=0)
    with pytest.raises(ValueError, match="one length per row"):
        batch_plan(100, 8, None, lengths[:5], bucket=2)


def test_bucketing_needs_a_collate_that_knows_lengths(task):
    with pytest.raises(ValueError, match="make_collate"):
        next(iterate_batches(task.train, lambda rows: rows, 8, bucket=2))


def test_bucketed_evaluation_puts_predictions_back_in_row_order(tokenizer):
    """Sorted batches (a different batch order) and plain batches give the same predictions per row."""
    task = _pairs_task()
    task = dataclasses.replace(task, dev=task.train)
    model, _ = load_model("tiny-bert", task="mrpc", seed=1)
    collate = make_collate(task, tokenizer, max_length=32)
    sorted_order = [i for idx, _ in iterate_batches(task.dev, collate, 4, bucket=3) for i in idx]
    assert sorted_order != list(range(len(task.dev)))  # the bucketed order really differs
    plain, refs = predict(model, tokenizer, task, batch_size=4, max_length=32, bucket=False)
    bucketed, _ = predict(model, tokenizer, task, batch_size=4, max_length=32, bucket=True)
    assert bucketed == plain and refs == [r["label"] for r in task.dev]
    # and per-row logits agree up to summation order (a row's padding does not change its output)
    model.eval()
    with torch.no_grad():
        alone = [model(**{k: v for k, v in collate([r]).items() if k != "labels"}).logits for r in task.dev]
        together = model(**{k: v for k, v in collate(task.dev).items() if k != "labels"}).logits
    torch.testing.assert_close(torch.cat(alone), together, rtol=1e-5, atol=1e-5)


def test_training_with_buckets_sees_every_row_once_per_epoch(tokenizer, task):
    model, tok = load_model("tiny-bert", task=task)
    seen, widths = [], []

    def objective(model, batch, indices):
        seen.extend(indices)
        lengths = batch["attention_mask"].sum(1)
        widths.append((int(lengths.max()), int(lengths.min())))
        out = model(**batch)
        return out.loss, {"loss": out.loss.item()}

    config = TrainConfig(lr=1e-3, batch_size=32, max_length=32, progress=False, epochs=2, bucket_batches=4)
    train(model, tok, task, config, objective=objective)
    assert sorted(seen[:256]) == list(range(256)) and sorted(seen[256:]) == list(range(256))
    assert seen[:256] != seen[256:]  # two epochs, two mixes
    spread = sum(hi - lo for hi, lo in widths) / len(widths)
    rows = make_collate(task, tok, max_length=32).lengths(task.train)
    assert spread < (max(rows) - min(rows)) / 2  # batches of similar lengths
