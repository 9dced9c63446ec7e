"""Pure tensor math of the compression methods: no nn.Module, no Hugging Face."""
from .svd import max_saving_rank, rank_for_ratio, svd_num_params, truncated_svd

__all__ = ["truncated_svd", "svd_num_params", "max_saving_rank", "rank_for_ratio"]

try:  # the MPO decomposition (issue 3) lands in its own module
    from .mpo import MPO, mpo_decompose  # noqa: F401
    from .shapes import factorize_dim, pad_to  # noqa: F401

    __all__ += ["MPO", "mpo_decompose", "factorize_dim", "pad_to"]
except ImportError:  # pragma: no cover - while mpo.py is being written
    pass
