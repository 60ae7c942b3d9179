"""Prompt maps from the unconditional pass's queries, and the anomaly-aware score."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from ZeroShotDiffusionSegLib.engine import SegmentationParams
from ZeroShotDiffusionSegLib.engine.anomaly import anomaly_map
from ZeroShotDiffusionSegLib.engine.prompt_maps import SliceState, layer_keys, prompt_keys, prompt_token_maps, token_probabilities
from ZeroShotDiffusionSegLib.errors import UserError


def test_token_softmax_equals_the_stock_processor_for_the_same_queries_and_keys():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=24, heads=4, dim_head=8, processor=AttnProcessor())
    hidden, context = torch.randn(2, 36, 32), torch.randn(1, 77, 24)
    recorded = []
    stock_scores = attn.get_attention_scores

    def record(query, key, attention_mask=None):
        recorded.append(stock_scores(query, key, attention_mask))
        return recorded[-1]

    attn.get_attention_scores = record
    with torch.no_grad():
        attn(hidden, encoder_hidden_states=context.expand(2, -1, -1))
        queries = attn.to_q(hidden).view(2, 36, 4, 8).transpose(1, 2)  # what the capture keeps, per head
        other = torch.randn(1, 77, 24)
        stacked = torch.cat([layer_keys(attn, context), layer_keys(attn, other)], dim=1)
        ours, beside = token_probabilities(queries, stacked, attn.scale, prompts=2)
    stock = recorded[0].view(2, 4, 36, 77)  # the stock processor folds heads into the batch
    assert ours.shape == stock.shape
    assert (ours - stock).abs().max().item() <= 1e-5
    # A second prompt's keys in the same product get their own softmax and change nothing of the first's.
    assert torch.allclose(beside.sum(-1), torch.ones(2, 4, 36)) and not torch.allclose(beside, ours)


def identity_key_layer(dim=4):
    attn = Attention(query_dim=dim, cross_attention_dim=dim, heads=1, dim_head=dim)
    with torch.no_grad():
        attn.to_k.weight.copy_(torch.eye(dim))
    return attn


def test_region_attending_to_token_a_gets_the_prompt_of_token_a():
    """2x2 latent: the left column's queries point at token A, the right column's at token B."""
    attn = identity_key_layer()
    a, b = torch.eye(4)[0], torch.eye(4)[1]
    queries = torch.stack([a, b, a, b]) * 6.0  # rows of a 2x2 grid: (0,0)=A (0,1)=B (1,0)=A (1,1)=B
    state = SliceState(torch.zeros(8, 8, dtype=torch.int16), (8, 8), {"layer": queries[None].half()})
    embedding = torch.zeros(1, 77, 4)
    embedding[0, 1], embedding[0, 2] = a, b
    with torch.no_grad():
        keys = prompt_keys({"layer": attn}, [embedding, embedding])
        (maps_a,), (maps_b,) = prompt_token_maps([state], {"layer": attn}, keys, [[1], [2]])
    scale = attn.scale
    # A query 6·a scores 6·scale on token A and 0 on the other 76 tokens.
    high = np.exp(6 * scale) / (np.exp(6 * scale) + 76)
    low = 1 / (np.exp(6 * scale) + 76)
    assert torch.allclose(maps_a[2][:, 0], torch.tensor([high, low, high, low], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(maps_b[2][:, 0], torch.tensor([low, high, low, high], dtype=torch.float32), atol=1e-6)


def test_anomaly_prefers_where_the_abnormal_prompt_wins():
    abnormal = torch.tensor([[0.04, 0.04], [0.01, 0.02]])
    normal = torch.tensor([[0.01, 0.04], [0.04, 0.02]])
    score = anomaly_map(abnormal, normal)
    assert score[0, 0] > 0.5 > score[1, 0]
    assert score[0, 1] == pytest.approx(0.5) and score[1, 1] == pytest.approx(0.5)
    assert torch.allclose(score, abnormal / (abnormal + normal))  # T = 1: the abnormal share
    sharp = anomaly_map(abnormal, normal, temperature=0.25)
    assert sharp[0, 0] > score[0, 0] and sharp[1, 0] < score[1, 0]
    with pytest.raises(UserError, match="anomaly temperature"):
        SegmentationParams(anomaly_temperature=0.0)


def test_fresh_run_equals_prompts_applied_to_the_captured_states(tiny_segmenter):
    rng = np.random.default_rng(1)
    images = [rng.random((60, 80)).astype(np.float32), rng.random((64, 64)).astype(np.float32)]
    states = tiny_segmenter.capture_states(images)
    for prompt, normal in (("liver tumor", None), ("lung nodule", "healthy lung")):
        fresh = tiny_segmenter.segment_batch(images, prompt=prompt, normal_prompt=normal)
        again = tiny_segmenter.score_states(states, prompt, normal)
        for one, two in zip(fresh, again):
            for name in ("labels", "prompt_map", "score_map", "soft", "mask"):
                assert np.array_equal(getattr(one, name), getattr(two, name)), name
    contrasted = again[0]
    assert contrasted.anomaly_map.shape == images[0].shape and 0 < contrasted.anomaly_map.min() <= contrasted.anomaly_map.max() < 1
    # Segments are scored by their mean anomaly score.
    segment = contrasted.labels == contrasted.labels[0, 0]
    assert contrasted.score_map[0, 0] == pytest.approx(float(contrasted.anomaly_map[segment].mean()), rel=1e-4)
    assert states[0].queries and all(q.dtype == torch.float16 for q in states[0].queries.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_fp16_fresh_run_equals_prompts_applied_to_the_captured_states():
    from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, load_backbone

    segmenter = DiffusionSegmenter(load_backbone("random:tiny", device="cuda", dtype="fp16"))
    images = [np.random.default_rng(2).random((64, 48)).astype(np.float32)]
    states = segmenter.capture_states(images)
    assert next(iter(states[0].queries.values())).device.type == "cuda"
    fresh = segmenter.segment_batch(images, prompt="liver tumor", normal_prompt="healthy liver")[0]
    again = segmenter.score_states(states, "liver tumor", "healthy liver")[0]
    for name in ("labels", "prompt_map", "anomaly_map", "score_map", "mask"):
        assert np.array_equal(getattr(fresh, name), getattr(again, name)), name
