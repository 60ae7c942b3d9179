"""Attention capture: exact output, layer bookkeeping, and the published SD layouts."""

import json
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from ZeroShotDiffusionSegLib.engine.attention import AttentionStore, capture_attention

CONFIGS = Path(__file__).resolve().parents[2] / "ZeroShotDiffusionSegLib" / "engine" / "configs"


def unet_inputs(unet, batch=2, side=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    side = side or unet.config.sample_size
    latents = torch.randn(batch, 4, side, side, generator=generator)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
    return latents, torch.tensor([300]), context


def test_capture_leaves_unet_output_unchanged_and_restores_processors(tiny_backbone):
    unet = tiny_backbone.unet
    unet.set_attn_processor(AttnProcessor2_0())
    latents, timestep, context = unet_inputs(unet)
    with torch.inference_mode():
        stock = unet(latents, timestep, encoder_hidden_states=context).sample
        store = AttentionStore(query_sides=[32, 16, 8])
        with capture_attention(unet, store):
            captured = unet(latents, timestep, encoder_hidden_states=context).sample
    assert (captured - stock).abs().max().item() <= 1e-5
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_store_holds_head_mean_per_resolution_with_rows_summing_to_one(tiny_backbone):
    unet = tiny_backbone.unet
    latents, timestep, context = unet_inputs(unet, batch=2)
    store = AttentionStore(query_sides=[32, 16, 8])
    with torch.inference_mode(), capture_attention(unet, store):
        unet(latents, timestep, encoder_hidden_states=context)
    # random:tiny has one transformer per down block, two per up block and one in the middle.
    assert dict(store.self_layers) == {64: 3, 32: 3, 16: 3, 8: 1} == dict(store.cross_layers)
    for side, maps in store.self_attention().items():
        assert maps.shape == (2, side * side, side * side) and maps.dtype == torch.float32
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, side * side), atol=1e-5, rtol=0)
    # Queries of the kept sides only, per layer, per head, in fp16.
    assert len(store.queries) == 3 + 3 + 1
    for name, query in store.queries.items():
        assert name.endswith("attn2.processor") and query.dtype == torch.float16
        assert query.shape[0] == 2 and query.shape[2] in (32**2, 16**2, 8**2)


def test_capture_is_removed_when_the_pass_fails(tiny_backbone):
    unet = tiny_backbone.unet
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    with pytest.raises(RuntimeError):
        with capture_attention(unet, AttentionStore()):
            unet(torch.randn(1, 3, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.randn(1, 77, 32))
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sd21base"])
def test_published_architectures_give_sixteen_self_attention_layers(name):
    """The exact SD 1.5 / 2.1-base UNets at 512 px: 16 self- and 16 cross-attention layers, 5/5/5/1 at 64/32/16/8."""
    from diffusers import UNet2DConditionModel

    config = json.loads((CONFIGS / name / "unet.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config).eval()
    latents, timestep, context = unet_inputs(unet, batch=1)
    store = AttentionStore(query_sides=[32, 16, 8])
    with torch.inference_mode(), capture_attention(unet, store):
        unet(latents, timestep, encoder_hidden_states=context)
    assert dict(store.self_layers) == {64: 5, 32: 5, 16: 5, 8: 1}
    assert dict(store.cross_layers) == {64: 5, 32: 5, 16: 5, 8: 1}
    assert store.self_attention()[64].shape == (1, 4096, 4096)
    query_values = sum(query.numel() for query in store.queries.values())
    assert query_values == 4_997_120  # 9.5 MiB per slice in fp16 (the README figure)
    mid = store.queries["mid_block.attentions.0.transformer_blocks.0.attn2.processor"]
    assert mid.shape == ((1, 8, 64, 160) if name == "sd15" else (1, 20, 64, 64))
