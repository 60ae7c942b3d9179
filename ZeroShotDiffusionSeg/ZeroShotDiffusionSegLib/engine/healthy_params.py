"""The knobs of the pseudo-healthy refinement (plain data, no torch), validated in one place for the
CLI, the volume pipeline, the worker and the server.

Defaults are starting points chosen for a CPU-tolerable cost, not tuned on data (there are no
released DiffuGTS settings to copy; docs/algorithms.md#pseudo-healthy-refinement):

- ``dilation_mm`` 5: the candidate is grown by 5 mm (pixels for a 2-D image, which has no spacing)
  so the repainted region holds the whole lesion and a rim of healthy tissue to continue.
- ``steps`` 15 and ``strength`` 0.7: a 15-step DDIM schedule of which the last int(15 x 0.7) = 10
  steps run, from the clean latent noised to t ~ 700. Strength 1 would repaint from pure noise;
  much lower keeps the lesion's own structure in the starting latent.
- ``guidance`` 5.0: classifier-free guidance scale, toward the normal prompt and away from the
  negative prompt (the lesion prompt when there is one). Below diffusers' 7.5 because strong
  guidance pushes an out-of-domain CT slice toward photographic texture.
- ``seed`` 0: the noise of slice ``key`` comes from ``noise_seed_for(seed, key)``, so a slice gets
  the same noise whatever batch it lands in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from ..checked_fields import bounded, check_fields
from ..errors import UserError

DEFAULT_DILATION_MM = 5.0
DEFAULT_STRENGTH = 0.7
DEFAULT_STEPS = 15
DEFAULT_GUIDANCE = 5.0
DEFAULT_SEED = 0


@dataclass(frozen=True)
class PseudoHealthyParams:
    """Each number declares its range with ``bounded`` (checked_fields.py), as SegmentationParams does."""

    dilation_mm: float = bounded(DEFAULT_DILATION_MM, 0.0, 100.0, flag="--healthy-dilation", unit="mm",
                                 title="healthy dilation")
    strength: float = bounded(DEFAULT_STRENGTH, 0.0, 1.0, low_open=True, flag="--healthy-strength", title="healthy strength")
    steps: int = bounded(DEFAULT_STEPS, 1, 1000, flag="--healthy-steps", title="healthy steps")
    guidance: float = bounded(DEFAULT_GUIDANCE, 0.0, 50.0, flag="--healthy-guidance", title="healthy guidance")
    seed: int = bounded(DEFAULT_SEED, 0, 2**32 - 1, flag="--healthy-seed", title="healthy seed")
    normal_prompt: Optional[str] = None  # None: prompt_words.normal_prompt_for(the lesion prompt)

    def __post_init__(self):
        check_fields(self)
        if int(self.steps * self.strength) < 1:
            raise UserError(f"--healthy-steps {self.steps} x --healthy-strength {self.strength} leaves no denoising step; "
                            "raise either")
        if self.normal_prompt is not None:
            if not isinstance(self.normal_prompt, str):
                raise UserError(f"normal prompt (normal_prompt) must be text, got {type(self.normal_prompt).__name__}")
            if not self.normal_prompt.strip():
                raise UserError("normal prompt (normal_prompt) is empty")

    @property
    def denoising_steps(self) -> int:
        """UNet steps actually run per slice (diffusers' img2img rule: int(steps x strength))."""
        return min(int(self.steps * self.strength), self.steps)

    def to_dict(self) -> dict:
        return asdict(self)


def noise_seed_for(seed: int, key: int) -> int:
    """The seed of one slice's noise: a function of (run seed, slice key) only, not of the batching."""
    return int(np.random.SeedSequence([int(seed), int(key)]).generate_state(1)[0])


def prompts_for(lesion_prompt: Optional[str], params: PseudoHealthyParams,
                request_normal_prompt: Optional[str] = None) -> Tuple[str, str]:
    """(normal prompt, negative prompt): guidance goes toward the normal prompt and away from the lesion prompt.

    The normal prompt: the parameters' own, else the request's ``--normal-prompt`` (a volume request carries
    it for the anomaly scores), else the rule's counterpart; "none" turns the anomaly contrast off, not this."""
    from ..prompt_words import normal_prompt_for  # the one normal-prompt rule, shared with the anomaly scores

    lesion_prompt = (lesion_prompt or "").strip()
    normal = params.normal_prompt or (normal_prompt_for(lesion_prompt, request_normal_prompt) if request_normal_prompt else None)
    return (normal or normal_prompt_for(lesion_prompt)).strip(), lesion_prompt
