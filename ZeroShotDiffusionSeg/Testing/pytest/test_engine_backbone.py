"""Backbone loading: random models, local folders, and every refusal with a one-line message."""

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine import DiffusionSegmenter, ModelLoadError, load_backbone
from ZeroShotDiffusionSegLib.errors import UserError


def test_random_model_warns_loudly_and_is_deterministic(capfd):
    first = load_backbone("random:tiny", device="cpu")
    assert "RANDOM weights" in capfd.readouterr().err
    second = load_backbone("random:tiny", device="cpu")
    assert first.is_random and first.resolution == 512 and first.dtype == torch.float32
    for a, b in zip(first.unet.parameters(), second.unet.parameters()):
        assert torch.equal(a, b)
    assert first.weight_checksums() == second.weight_checksums()


def test_tokenizer_is_the_real_clip_tokenizer_offline(tiny_backbone):
    ids = tiny_backbone.tokenizer("a CT scan of a liver tumor")["input_ids"]
    assert ids == [49406, 320, 1122, 11261, 539, 320, 12639, 22616, 49407]


def test_local_safetensors_folder_loads_and_matches(tiny_backbone, tmp_path):
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        component = getattr(tiny_backbone, name)
        save = getattr(component, "save_pretrained", None) or component.save_config
        save(tmp_path / name)
    loaded = load_backbone(str(tmp_path), device="cpu")
    assert not loaded.is_random and loaded.model_id == str(tmp_path)
    assert set(loaded.weight_checksums()) == {"unet", "vae", "text_encoder"}
    assert all(len(v) == 64 for v in loaded.weight_checksums().values())
    image = np.random.default_rng(0).random((40, 60)).astype(np.float32)
    ours = DiffusionSegmenter(loaded).segment_batch([image], prompt="tumor")[0]
    reference = DiffusionSegmenter(tiny_backbone).segment_batch([image], prompt="tumor")[0]
    assert np.array_equal(ours.labels, reference.labels) and np.allclose(ours.soft, reference.soft)


def test_pickle_only_checkpoint_is_refused(tiny_backbone, tmp_path):
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / name).mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match=r"only pickle weights for unet .*refused"):
        load_backbone(str(tmp_path), device="cpu")


@pytest.mark.parametrize("model, message", [
    ("random:huge", r"unknown random model 'random:huge'"),
    ("/no/such/folder", r"model folder '/no/such/folder' does not exist"),
    ("notamodel", r"unknown model 'notamodel'"),
    ("someone/not-cached-model", r"'someone/not-cached-model' is not in the Hugging Face cache .* --model /path/to/folder"),
    ("", r"no model given"),
])
def test_unloadable_models_give_one_clear_line(model, message):
    with pytest.raises(ModelLoadError, match=message) as error:
        load_backbone(model, device="cpu")
    assert "\n" not in str(error.value)


def test_incomplete_folder_names_what_is_missing(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="missing vae/, text_encoder/, tokenizer/, scheduler/"):
        load_backbone(str(tmp_path), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="sees no CUDA GPU; use --device cpu"):
        load_backbone("random:tiny", device="cuda")
