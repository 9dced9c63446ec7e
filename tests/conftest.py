"""Test-wide settings: offline, quiet, and every cache/result in a temporary directory.

These are set at import time so that nbval's notebook kernels (child processes) inherit them.
"""
import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="mpstudy-tests-")
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HOME": os.path.join(_TMP, "hf"),
    "MPSTUDY_CACHE": os.path.join(_TMP, "cache"),
    "MPSTUDY_RESULTS": os.path.join(_TMP, "results"),
}.items():
    os.environ.setdefault(key, value)
# The smoke notebooks must behave as in CI, with no data dir: keep a user's MPSTUDY_DATA away
# from them, but let the real-data tests (tests/test_tasks.py) find it as MPSTUDY_TEST_DATA.
if "MPSTUDY_DATA" in os.environ:
    os.environ.setdefault("MPSTUDY_TEST_DATA", os.environ.pop("MPSTUDY_DATA"))
