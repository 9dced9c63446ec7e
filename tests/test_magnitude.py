"""The one magnitude-pruning implementation against oracles.

``magnitude_masks`` / ``magnitude_prune`` (and the two uses built on them: ``prune_linear``,
per matrix at a keep ratio, and ``prune_group``, global over a group at a kept fraction)
must give the masks of

* an independent oracle: the ``keep`` entries of largest ``|w|`` found by sorting, and
* ``torch.nn.utils.prune`` called directly the way the earlier implementations did
  (``l1_unstructured(amount=n_prune)`` per matrix; ``global_unstructured`` with the dense weights
  as importance scores over a group), so the refactoring changed no mask.

Random matrices have no ties in ``|w|``, so the kept set is unique and every method must agree.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mpstudy.factorize.magnitude import magnitude_masks
from mpstudy.layers.magnitude import MagnitudePrunedLayer, magnitude_prune, prune_group
from mpstudy.prune import clone_module, prune_linear

SHAPES = [[(16, 24)], [(7, 5)], [(32, 8), (32, 8), (32, 8)], [(12, 20), (20, 12), (9, 9)]]


def _weights(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for shape in shapes]


def _top_k_by_sorting(weights, keep):
    """Oracle: 1 for the ``keep`` largest ``|w|`` over all weights, by a full sort (no topk)."""
    flat = torch.cat([w.abs().flatten() for w in weights])
    order = torch.argsort(flat, descending=True)
    mask = torch.zeros_like(flat)
    mask[order[:keep]] = 1
    return [m.view_as(w) for m, w in zip(mask.split([w.numel() for w in weights]), weights)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "+".join(f"{a}x{b}" for a, b in s))
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_masks_are_the_top_k_by_magnitude(shapes, seed, fraction):
    weights = _weights(shapes, seed)
    entries = sum(w.numel() for w in weights)
    keep = round(fraction * entries)
    masks = magnitude_masks(weights, keep)
    assert [m.shape for m in masks] == [w.shape for w in weights]
    assert int(sum(m.sum() for m in masks)) == keep
    assert all(torch.equal(m, o) for m, o in zip(masks, _top_k_by_sorting(weights, keep)))


@pytest.mark.parametrize("seed", [0, 3])
def test_pruning_a_pruned_matrix_again_competes_among_survivors(seed):
    """``current``: pruned entries stay pruned even when large; survivors are ranked among themselves."""
    (w,) = _weights([(10, 10)], seed)
    current = (torch.rand(10, 10, generator=torch.Generator().manual_seed(seed + 10)) < 0.6).float()
    (mask,) = magnitude_masks([w], 20, current=[current])
    assert int(mask.sum()) == 20 and torch.all(mask <= current)
    alive = w.abs()[current.bool()]
    threshold = alive.sort(descending=True).values[19]
    assert torch.equal(mask.bool(), current.bool() & (w.abs() >= threshold))


@pytest.mark.parametrize("keep, match", [(-1, r"keep must be an int in \[0, 6\]"), (7, r"\[0, 6\].*got 7"),
                                         (2.0, "got 2.0"), (True, "got True")])
def test_a_bad_keep_is_refused(keep, match):
    with pytest.raises(ValueError, match=match):
        magnitude_masks([torch.randn(2, 3)], keep)


def test_mismatched_current_masks_are_refused():
    with pytest.raises(ValueError, match=r"must match the scores' shapes \[\(2, 3\)\]"):
        magnitude_masks([torch.randn(2, 3)], 1, current=[torch.ones(3, 2)])


# --------------------------------------------------------------------------- the two uses, against torch called directly


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(16, 24), (7, 5), (33, 3)])
@pytest.mark.parametrize("keep_ratio", [0.1, 0.3, 0.5, 0.77, 1.0])
def test_prune_linear_equals_l1_unstructured(shape, seed, keep_ratio):
    torch.manual_seed(seed)
    linear = nn.Linear(shape[1], shape[0])
    reference = copy.deepcopy(linear)
    prune_linear(linear, keep_ratio)
    n_prune = round((1 - keep_ratio) * reference.weight.numel())  # the earlier prune_linear's count
    if n_prune:
        torch_prune.l1_unstructured(reference, "weight", amount=n_prune)
        assert torch.equal(linear.weight_mask, reference.weight_mask)
        assert torch.equal(linear.weight_orig, reference.weight_orig)
    else:
        assert not hasattr(linear, "weight_mask")
    copy.deepcopy(linear)  # no autograd history on the masked weight before a forward: it deep-copies
    x = torch.randn(4, shape[1])
    assert torch.equal(linear(x), reference(x))


def test_prune_linear_twice_prunes_further_among_survivors_as_torch_does():
    torch.manual_seed(4)
    linear = nn.Linear(12, 10)
    reference = copy.deepcopy(linear)
    prune_linear(prune_linear(linear, 0.7), 0.8)
    torch_prune.l1_unstructured(reference, "weight", amount=36)
    torch_prune.l1_unstructured(reference, "weight", amount=24)
    assert torch.equal(linear.weight_mask, reference.weight_mask) and int(linear.weight_mask.sum()) == 60
    with pytest.raises(ValueError, match="only 60 weights survive"):
        prune_linear(linear, 0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shapes", SHAPES[:3], ids=lambda s: "+".join(f"{a}x{b}" for a, b in s))
@pytest.mark.parametrize("keep", [2 / 3, 0.5, 1 / 3, 0.22])
def test_prune_group_equals_global_unstructured(shapes, seed, keep):
    torch.manual_seed(seed)
    modules = [nn.Linear(cols, rows, bias=True) for rows, cols in shapes]
    entries = sum(m.weight.numel() for m in modules)
    n_keep = round(keep * entries)  # prune_group's count
    reference = [copy.deepcopy(m) for m in modules]
    torch_prune.global_unstructured([(m, "weight") for m in reference], pruning_method=torch_prune.L1Unstructured,
                                    amount=entries - n_keep)
    layers, info = prune_group(modules, keep=keep)
    assert info["kept"] == n_keep
    for layer, ref, module in zip(layers, reference, modules):
        assert isinstance(layer, MagnitudePrunedLayer)
        assert torch.equal(layer.inner.weight_mask, ref.weight_mask)
        assert torch.equal(layer.to_dense(), ref.weight)
        assert torch.equal(layer.inner.weight, ref.weight)  # the masked weight is set before any forward
        assert not hasattr(module, "weight_mask")  # the originals are untouched
    kept = torch.cat([ref.weight.detach().abs().flatten() for ref in reference])
    assert info["threshold"] == float(kept[kept > 0].min())
    copy.deepcopy(layers)


def test_magnitude_prune_on_a_mixed_group_and_with_own_scores():
    """Scores other than the weights rank the entries; a pruned and an unpruned module compete together."""
    torch.manual_seed(5)
    a, b = nn.Linear(6, 4), nn.Linear(6, 4)
    prune_linear(a, 0.5)
    before = a.weight_mask.clone()
    scores = [torch.randn(4, 6), torch.randn(4, 6)]
    masks = magnitude_prune([a, b], 10, scores=scores)
    alive = torch.cat([before.flatten(), torch.ones(24)]).bool()
    flat = torch.cat([s.abs().flatten() for s in scores])
    threshold = flat[alive].sort(descending=True).values[9]
    expected = alive & (flat >= threshold)
    assert torch.equal(torch.cat([m.flatten() for m in masks]).bool(), expected)
    assert torch.equal(a.weight_mask, masks[0]) and torch.equal(b.weight_mask, masks[1])
    clone_module(a)
