"""Pure tensor math of the compression methods: no nn.Module, no Hugging Face."""
from .mpo import MPO, mpo_decompose, mpo_num_params
from .shapes import factorize_dim, pad_to, padded_factorization, unpad
from .svd import max_saving_rank, rank_for_keep, svd_num_params, truncated_svd
from .autoencoder import ae_sizes_for_keep, row_loss
from .budget import BUDGET_TOLERANCE, check_keep, keep_target
from .kronecker import kronecker_plan_for_keep, kronecker_sum_to_dense, nearest_kronecker_sum
from .tucker import hosvd, tucker_decompose, tucker_plan_for_keep, tucker_to_tensor
from .falcon import falcon_fit, falcon_num_params, falcon_sgd_fit, falcon_to_stack
from .stacks import tucker_stack, tucker_stack_num_params, tucker_stack_ranks
from .fwsvd import normalize_importance, row_weighted_error, weighted_truncated_svd
from .magnitude import magnitude_masks

__all__ = [
    "truncated_svd", "svd_num_params", "max_saving_rank", "rank_for_keep",
    "MPO", "mpo_decompose", "mpo_num_params", "factorize_dim", "padded_factorization", "pad_to", "unpad",
    "ae_sizes_for_keep", "row_loss", "BUDGET_TOLERANCE", "check_keep", "keep_target", "kronecker_plan_for_keep", "kronecker_sum_to_dense",
    "nearest_kronecker_sum", "hosvd", "tucker_decompose", "tucker_plan_for_keep", "tucker_to_tensor",
    "falcon_fit", "falcon_num_params", "falcon_sgd_fit", "falcon_to_stack", "tucker_stack", "tucker_stack_num_params",
    "tucker_stack_ranks",
    "weighted_truncated_svd", "row_weighted_error", "normalize_importance",
    "magnitude_masks",
]
