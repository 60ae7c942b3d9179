"""The prompt rule, seed selection and determinism of the whole 2-D engine."""

import numpy as np
import pytest
import torch

from ZeroShotDiffusionSegLib.engine import SegmentationParams
from ZeroShotDiffusionSegLib.engine.selection import prompt_attention_map, segment_scores, select_by_prompt, select_by_seeds
from ZeroShotDiffusionSegLib.errors import UserError


def test_prompt_rule_keeps_segments_at_least_threshold_of_the_best():
    labels = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    scores = np.array([0.1, 0.8, 0.45, 0.39])
    score_map, soft, mask = select_by_prompt(labels, scores, threshold=0.5)
    assert np.allclose(score_map, scores[labels])
    assert np.allclose(soft, scores[labels] / 0.8) and soft.max() == 1.0
    assert mask.tolist() == [[False, False, True, True], [True, True, False, False]]
    assert np.array_equal(mask, soft >= 0.5)  # re-thresholding the soft map re-creates the selection
    assert select_by_prompt(labels, np.zeros(4), 0.5)[2].sum() == 0


def test_segment_scores_ignore_padding():
    labels = torch.tensor([[0, 0, 1, 1]])
    prompt = torch.tensor([[1.0, 3.0, 2.0, 100.0]])
    valid = torch.tensor([[True, True, True, False]])
    assert segment_scores(labels, prompt, valid).tolist() == [2.0, 2.0]


def test_prompt_map_averages_resolutions_equally():
    maps = {2: torch.ones(4, 3), 1: torch.zeros(1, 3)}  # side -> (N, T)
    assert torch.allclose(prompt_attention_map(maps, 8), torch.full((8, 8), 0.5))


def test_seeds_pick_their_segments_and_outside_seeds_are_refused():
    labels = np.array([[0, 1, 1], [2, 2, 1]])
    assert select_by_seeds(labels, [(1, 0)]).tolist() == [[False, True, True], [False, False, True]]
    assert select_by_seeds(labels, [(0, 0), (0, 1)]).sum() == 3
    with pytest.raises(UserError, match=r"seed \(3,0\) is outside the image \(3x2 pixels"):
        select_by_seeds(labels, [(3, 0)])


def test_engine_modes_shapes_and_determinism(tiny_segmenter):
    rng = np.random.default_rng(0)
    images = [rng.random((70, 90)).astype(np.float32), rng.random((50, 40, 3)).astype(np.float32)]
    first = tiny_segmenter.segment_batch(images, prompt="liver tumor")
    second = tiny_segmenter.segment_batch(images, prompt="liver tumor")
    for result, again, image in zip(first, second, images):
        assert result.labels.shape == result.mask.shape == result.soft.shape == image.shape[:2]
        assert result.labels.dtype == np.int64 and 0.0 <= result.soft.min() and result.soft.max() == pytest.approx(1.0)
        assert np.array_equal(result.mask, result.soft >= 0.5)
        assert np.array_equal(result.labels, again.labels) and np.array_equal(result.soft, again.soft)
    assert set(first[0].timings) == {"text", "preprocess", "vae", "unet", "merging", "selection"}
    seeded = tiny_segmenter.segment_batch(images[:1], seeds=[[(5, 6)]])[0]
    assert seeded.mask[6, 5] and seeded.prompt_map is None
    unsupervised = tiny_segmenter.segment_batch(images[:1])[0]
    assert unsupervised.mask is None and unsupervised.soft is None
    noisy = SegmentationParams(noise_seed=7)
    a, b = (tiny_segmenter.segment_batch(images[:1], prompt="x", params=noisy)[0] for _ in range(2))
    assert np.array_equal(a.soft, b.soft)


def test_content_tokens_exclude_bos_eos_and_padding(tiny_segmenter):
    embedding, positions = tiny_segmenter.encode_prompt("a CT scan of a liver tumor")
    assert embedding.shape == (1, 77, 32) and positions == list(range(1, 8))


@pytest.mark.parametrize("call, message", [
    (lambda s: s.segment_batch([np.zeros((8, 8))], prompt="   "), "the prompt is empty"),
    (lambda s: s.segment_batch([]), "no images"),
    (lambda s: s.segment_batch([np.zeros((8, 8))], seeds=[[(9, 0)]]), "outside the image"),
])
def test_engine_input_errors(tiny_segmenter, call, message):
    with pytest.raises(UserError, match=message):
        call(tiny_segmenter)
