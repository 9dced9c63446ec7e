"""A user's training script, unchanged for one process or several (launched by tests/test_ddp.py).

    python tests/ddp_script.py OUT_DIR [PRECISION [BUCKET_BATCHES]]
    accelerate launch --multi_gpu --num_processes 2 tests/ddp_script.py OUT_DIR [PRECISION [BUCKET_BATCHES]]

Trains a tiny BERT on 71 synthetic rows with a global batch of 16 (so the last batch, 7 rows,
splits unevenly over two ranks) for 6 steps, evaluating every 3, and writes
``OUT_DIR/rank<R>.pt``: this rank's final weights, history and best metrics. Dropout is off:
under data parallelism every rank draws its own masks, so only dropout-free runs can match.
"""
import os
import sys

import torch

from mpstudy import TrainConfig, load_model, load_task, train

out = sys.argv[1]
precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
bucket = int(sys.argv[3]) if len(sys.argv) > 3 else None
task = load_task("synthetic-cls", max_train=71, max_eval=32)
model, tokenizer = load_model("tiny-bert", task=task, seed=0)
for module in model.modules():
    if isinstance(module, torch.nn.Dropout):
        module.p = 0.0
config = TrainConfig(lr=1e-3, batch_size=16, max_steps=6, eval_every=3, progress=False, device="cpu", seed=0,
                     precision=precision, bucket_batches=bucket)
result = train(model, tokenizer, task, config)
history = [{k: v for k, v in r.items() if k not in ("elapsed_s", "train_s")} for r in result.history]
torch.save({"state": model.state_dict(), "history": history, "best": result.best_metrics, "best_step": result.best_step,
            "world": int(os.environ.get("WORLD_SIZE", "1"))},
           os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))
