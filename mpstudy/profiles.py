"""The parameter sets a study runs with: ``smoke``, ``cpu`` and ``gpu``.

A profile is data, not a code path: ``mpstudy run NOTEBOOK --profile P`` injects
``COMMON[P]`` updated with ``STUDIES[<notebook stem>][P]`` as papermill parameters, and the
notebook reads nothing else. Each template's own ``parameters`` cell holds the smoke values
(a test checks it), so nbval and a plain "Run all" exercise the smoke profile.

* smoke: tiny random-init models, synthetic data; seconds per notebook, any CPU, offline.
* cpu: all-MiniLM-L6-v2 (real pre-trained weights) on subsets of real GLUE; minutes on 2 cores.
* gpu: the papers' own models and full data from the hub; one GPU.
"""
from __future__ import annotations

import copy
from typing import Any

__all__ = ["PROFILE_NAMES", "COMMON", "STUDIES", "PROFILES", "get_profile"]

PROFILE_NAMES = ("smoke", "cpu", "gpu")

#: parameters every study gets under each profile
COMMON: dict[str, dict[str, Any]] = {name: {"profile": name, "seed": 0} for name in PROFILE_NAMES}

#: study (notebook stem) -> profile -> parameters. One block per study.
STUDIES: dict[str, dict[str, dict[str, Any]]] = {
    "00_offline_svd": {
        "smoke": {"model_name": "tiny-bert", "task_name": "synthetic-cls", "max_train": 512, "max_eval": 128,
                  "lr": 1e-3, "epochs": 3, "batch_size": 32, "max_length": 64,
                  "ratios": [0.9, 0.7, 0.5, 0.3, 0.1]},
        "cpu": {"model_name": "minilm", "task_name": "sst2", "max_train": 8000, "max_eval": None,
                "lr": 5e-5, "epochs": 2, "batch_size": 32, "max_length": 64,
                "ratios": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]},
        "gpu": {"model_name": "bert-base-uncased", "task_name": "sst2", "max_train": None, "max_eval": None,
                "lr": 2e-5, "epochs": 3, "batch_size": 32, "max_length": 128,
                "ratios": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]},
    },
    "01_mpop": {
        "smoke": {"model_name": "tiny-bert", "task_name": "synthetic-cls", "max_train": 256, "max_eval": 64, "seeds": [0],
                  "epochs": 2, "batch_size": 32, "max_length": 32, "lr": 1e-3, "mpo_lr": 1e-3, "light_lr": 1e-3, "lora_lr": 1e-3,
                  "emb_cap": 64, "squeeze_cuts": 2, "squeeze_step": 0.25, "squeeze_steps": 2, "squeeze_tolerance": 0.02},
        # MiniLM analogue of MPOP's SST-2 set-up. The embedding cap keeps 44 % of the 30,522 x 384 table
        # (ALBERT's cap 240 kept 54 % of its 30,000 x 128 one). The pooler stays dense: all-MiniLM-L6-v2
        # ships no trained pooler, and freezing the central tensor of a random matrix is meaningless.
        "cpu": {"model_name": "minilm", "task_name": "sst2", "max_train": 2000, "max_eval": None, "seeds": [0, 1, 2],
                "epochs": 1, "batch_size": 32, "max_length": 64, "lr": 5e-5, "mpo_lr": 5e-5, "light_lr": 5e-4,
                "lora_lr": 1e-3, "mpo_groups": ["word_embed", "attention", "attention_output", "FFN"],
                "emb_cap": 384, "squeeze_cuts": 6, "squeeze_step": 0.25, "squeeze_steps": 10, "squeeze_tolerance": 0.01},
        # albert-base-v2 as in the original's SST-2 run (caps 480/384/256, lr 2.7e-5, mpo_lr 2.8e-6, 3 epochs)
        "gpu": {"model_name": "albert-base-v2", "task_name": "sst2", "max_train": None, "max_eval": None, "seeds": [0, 1, 2],
                "epochs": 3, "batch_size": 32, "max_length": 128, "lr": 2.7e-5, "mpo_lr": 2.8e-6, "light_lr": 2.7e-5, "lora_lr": 5e-4,
                "emb_cap": 480, "attention_cap": 256, "linear_cap": 384, "squeeze_cuts": 40, "squeeze_step": 0.1,
                "squeeze_steps": 100, "squeeze_tolerance": 0.01},
    },
    # --- new studies go above this line ---
}


def _assemble() -> dict[str, dict[str, dict[str, Any]]]:
    """The same data viewed by profile: ``PROFILES[profile]["common" | study]``."""
    return {p: {"common": COMMON[p], **{study: blocks.get(p, {}) for study, blocks in STUDIES.items()}} for p in PROFILE_NAMES}


PROFILES = _assemble()


def get_profile(profile: str, study: str) -> dict[str, Any]:
    """The papermill parameters of ``study`` (a notebook stem such as ``"00_offline_svd"``) under ``profile``."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; known: {list(PROFILE_NAMES)}")
    params = copy.deepcopy(COMMON[profile])
    params.update(copy.deepcopy(STUDIES.get(study, {}).get(profile, {})))
    return params
