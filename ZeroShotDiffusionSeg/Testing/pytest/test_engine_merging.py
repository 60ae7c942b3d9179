"""DiffSeg aggregation and merging on synthetic attention whose answer is known."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from ZeroShotDiffusionSegLib.engine import aggregate_self_attention, segment_self_attention
from ZeroShotDiffusionSegLib.engine.merging import _merge_proposals, anchor_grid, resolution_weights, symmetric_kl

SIDES = (64, 32, 16, 8)


def known_partition() -> np.ndarray:
    """Five regions on the 64x64 latent grid, aligned to 8-pixel blocks so every resolution agrees."""
    blocks = np.zeros((8, 8), dtype=int)
    blocks[:4, 4:] = 1
    blocks[4:, :3] = 2
    blocks[4:, 3:] = 3
    blocks[2:6, 2:6] = 4
    return np.kron(blocks, np.ones((8, 8), dtype=int))


def attention_from_partition(partition: np.ndarray, heads: int = 2, floor: float = 1e-3, seed: int = 0):
    """Every query attends (with noise and a floor) to the keys of its own region, at every resolution."""
    rng = np.random.default_rng(seed)
    maps = {}
    for side in SIDES:
        part = partition[:: 64 // side, :: 64 // side].reshape(-1)
        same = (part[:, None] == part[None, :]).astype(np.float64)
        per_head = []
        for _ in range(heads):
            noisy = same * (1.0 + 0.1 * rng.random(same.shape)) + floor
            per_head.append(noisy / noisy.sum(1, keepdims=True))
        maps[side] = torch.tensor(np.stack(per_head), dtype=torch.float32)
    return maps


@pytest.mark.parametrize("kl_threshold", [0.3, 0.7, 1.1, 1.5, 2.5])
def test_known_partition_is_recovered(kl_threshold):
    partition = known_partition()
    labels = segment_self_attention(attention_from_partition(partition), kl_threshold=kl_threshold)
    assert labels.shape == (512, 512) and labels.dtype == torch.int64
    expected = np.kron(partition, np.ones((8, 8), dtype=int))
    assert adjusted_rand_score(expected.ravel(), labels.numpy().ravel()) >= 0.99
    assert sorted(labels.unique().tolist()) == list(range(5))  # contiguous ids 0..K-1


def test_kmeans_refinement_keeps_the_partition():
    partition = known_partition()
    labels = segment_self_attention(attention_from_partition(partition), refine=True)
    expected = np.kron(partition, np.ones((8, 8), dtype=int))
    assert adjusted_rand_score(expected.ravel(), labels.numpy().ravel()) >= 0.99


def test_huge_threshold_merges_everything_and_tiny_threshold_keeps_anchors_apart():
    maps = attention_from_partition(known_partition())
    assert segment_self_attention(maps, kl_threshold=1e6).unique().tolist() == [0]
    assert len(segment_self_attention(maps, kl_threshold=1e-9).unique()) > 5


def test_aggregated_rows_sum_to_one_and_weights_are_proportional():
    torch.manual_seed(0)
    maps = {side: torch.randn(3, side * side, side * side).softmax(-1) for side in SIDES}
    aggregated = aggregate_self_attention(maps)
    assert aggregated.shape == (4096, 4096) and aggregated.dtype == torch.float32
    torch.testing.assert_close(aggregated.sum(1), torch.ones(4096), atol=1e-5, rtol=0)
    weights = resolution_weights(SIDES)
    assert [round(weights[s], 3) for s in SIDES] == [0.533, 0.267, 0.133, 0.067]


def test_query_axis_is_tiled_nearest_and_key_axis_upsampled():
    """Coarse queries are copied to every fine query of their block; their maps are upsampled and renormalised."""
    torch.manual_seed(1)
    uniform = torch.full((1, 256, 256), 1.0 / 256)
    coarse = torch.randn(1, 64, 64).softmax(-1)
    aggregated = aggregate_self_attention({16: uniform, 8: coarse})
    weights = resolution_weights((16, 8))
    blocks = aggregated.reshape(16, 16, 256)
    assert torch.equal(blocks[:2, :2], blocks[:1, :1].expand(2, 2, 256))  # one 2x2 block, one coarse query
    assert not torch.equal(blocks[0, 0], blocks[0, 2])
    upsampled = torch.nn.functional.interpolate(coarse[0, 0].reshape(1, 1, 8, 8), size=(16, 16), mode="bilinear", align_corners=False)
    expected = weights[16] / 256 + weights[8] * (upsampled / upsampled.sum()).reshape(-1)
    torch.testing.assert_close(aggregated[0], expected)


def test_anchor_grid_matches_reference():
    grid = anchor_grid(64, 16)
    rows, cols = grid // 64, grid % 64
    assert rows.unique().tolist() == list(range(1, 62, 4)) == cols.unique().tolist()
    assert grid[:3].tolist() == [1 * 64 + 1, 1 * 64 + 5, 1 * 64 + 9]  # row-major, as 'ij' meshgrid


def test_symmetric_kl_matches_definition():
    torch.manual_seed(2)
    p = torch.rand(4, 50).softmax(-1)
    q = torch.rand(3, 50).softmax(-1)
    brute = torch.stack([torch.stack([0.5 * ((a - b) * (a.log() - b.log())).sum() for b in q]) for a in p])
    torch.testing.assert_close(symmetric_kl(p, q), brute, atol=1e-5, rtol=1e-5)
    assert symmetric_kl(p, p).diagonal().abs().max() < 1e-5


def test_later_iterations_are_greedy_in_order_and_reuse_matched_proposals():
    """A~B and B~C but not A~C: A absorbs B; C, still unmatched, absorbs B again (reference semantics)."""
    proposals = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.485, 0.485, 0.015, 0.015], [0.01, 0.97, 0.01, 0.01]])
    distance = symmetric_kl(proposals, proposals)
    threshold = float((distance[0, 1] + distance[0, 2]) / 2)  # between 'close' and 'far'
    assert distance[0, 1] < threshold and distance[1, 2] < threshold and distance[0, 2] > threshold
    merged = _merge_proposals(proposals, threshold)
    torch.testing.assert_close(merged, torch.stack([(proposals[0] + proposals[1]) / 2, (proposals[1] + proposals[2]) / 2]))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="must have shape"):
        segment_self_attention({64: torch.rand(2, 10, 10)})
    with pytest.raises(ValueError, match="no self-attention"):
        segment_self_attention({})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    maps = attention_from_partition(known_partition())
    cpu = segment_self_attention(maps)
    gpu = segment_self_attention({side: m.cuda() for side, m in maps.items()})
    assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())
