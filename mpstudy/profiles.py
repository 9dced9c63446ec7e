"""The parameter sets a study runs with: ``smoke``, ``cpu`` and ``gpu``.

A profile is data, not a code path: ``mpstudy run NOTEBOOK --profile P`` injects
``PROFILES[P]["common"]`` updated with ``PROFILES[P][<study>]`` as papermill parameters, and the
notebook reads nothing else. Each notebook's own ``parameters`` cell holds the smoke values, so
nbval and a plain "Run all" exercise the smoke profile.

* smoke: tiny random-init models, synthetic data; seconds per notebook, any CPU, offline.
* cpu: all-MiniLM-L6-v2 (real pre-trained weights) on subsets of real GLUE; minutes on 2 cores.
* gpu: the papers' own models and full data from the hub; one GPU.
"""
from __future__ import annotations

import copy
from typing import Any

__all__ = ["PROFILES", "get_profile"]

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "common": {"profile": "smoke", "seed": 0},
        "00_offline_svd": {
            "model_name": "tiny-bert", "task_name": "synthetic-cls", "max_train": 512, "max_eval": 128,
            "lr": 1e-3, "epochs": 3, "batch_size": 32, "max_length": 64,
            "ratios": [0.9, 0.7, 0.5, 0.3, 0.1],
        },
    },
    "cpu": {
        "common": {"profile": "cpu", "seed": 0},
        "00_offline_svd": {
            "model_name": "minilm", "task_name": "sst2", "max_train": 8000, "max_eval": None,
            "lr": 5e-5, "epochs": 2, "batch_size": 32, "max_length": 64,
            "ratios": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        },
    },
    "gpu": {
        "common": {"profile": "gpu", "seed": 0},
        "00_offline_svd": {
            "model_name": "bert-base-uncased", "task_name": "sst2", "max_train": None, "max_eval": None,
            "lr": 2e-5, "epochs": 3, "batch_size": 32, "max_length": 128,
            "ratios": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        },
    },
}


def get_profile(profile: str, study: str) -> dict[str, Any]:
    """The papermill parameters of ``study`` (a notebook stem such as ``"00_offline_svd"``) under ``profile``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    params = copy.deepcopy(PROFILES[profile]["common"])
    params.update(copy.deepcopy(PROFILES[profile].get(study, {})))
    return params
