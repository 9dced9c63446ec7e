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
# The same floating-point results on any x86 CPU with AVX2 (the stored smoke outputs nbval compares
# were computed this way, see mpstudy.runner.REPRODUCIBLE_FLOAT_ENV): MKL's conditional numerical
# reproducibility and ATen's AVX2 kernels, instead of the fastest code path of each CPU (an AVX512/AMX
# machine's matrix products differ in the last bits, and a training run amplifies that).
# Set before torch is imported (MKL reads it once); checked against the library's copy below.
_FLOAT_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for key, value in _FLOAT_ENV.items():
    os.environ.setdefault(key, value)
# The smoke notebooks must behave as in CI, with no data dir: keep a user's MPSTUDY_DATA away
# from them, but let the real-data tests (tests/test_tasks.py) find it as MPSTUDY_TEST_DATA.
if "MPSTUDY_DATA" in os.environ:
    os.environ.setdefault("MPSTUDY_TEST_DATA", os.environ.pop("MPSTUDY_DATA"))


import pytest  # noqa: E402
import torch  # noqa: E402

from mpstudy.runner import REPRODUCIBLE_FLOAT_ENV  # noqa: E402

assert REPRODUCIBLE_FLOAT_ENV == _FLOAT_ENV, "tests/conftest.py and mpstudy.runner disagree on the float environment"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one intra-op thread (use with ``pytestmark = pytest.mark.usefixtures(...)``):
    small decompositions spend more on OpenMP hand-offs than on math on 2 shared cores (a 24x24 MPO
    took 0.15 s on 2 busy threads, 1 ms on one). The previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
