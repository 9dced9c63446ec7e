"""Pure tensor math of the compression methods: no nn.Module, no Hugging Face."""
from .mpo import MPO, mpo_decompose, mpo_num_params
from .shapes import factorize_dim, pad_to, padded_factorization, unpad
from .svd import max_saving_rank, rank_for_ratio, svd_num_params, truncated_svd

__all__ = [
    "truncated_svd", "svd_num_params", "max_saving_rank", "rank_for_ratio",
    "MPO", "mpo_decompose", "mpo_num_params", "factorize_dim", "padded_factorization", "pad_to", "unpad",
]
