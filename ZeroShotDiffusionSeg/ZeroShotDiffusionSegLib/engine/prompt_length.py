"""Telling the user when a prompt is longer than the text encoder reads.

CLIP's tokenizer holds 77 tokens: BOS, 75 content tokens, EOS. ``encode_prompt`` truncates a longer
prompt silently; ``prompt_cut_note`` says so, with the last words that still count.
"""

from __future__ import annotations

from typing import Optional


def prompt_cut_note(tokenizer, prompt: Optional[str]) -> Optional[str]:
    """A one-line note when ``prompt`` has more content tokens than ``tokenizer`` keeps, else None."""
    prompt = (prompt or "").strip()
    if not prompt or tokenizer is None:
        return None
    content = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    limit = int(tokenizer.model_max_length) - 2  # BOS and EOS take two places
    if len(content) <= limit:
        return None
    kept = " ".join(tokenizer.decode(content[:limit]).split())
    return (f"the prompt has {len(content)} tokens; the text encoder reads the first {limit} "
            f"(up to '...{kept[-40:]}'), the rest is ignored")


def segmenter_prompt_note(segmenter, prompt: Optional[str]) -> Optional[str]:
    """``prompt_cut_note`` with a segmenter's own tokenizer; None for a segmenter without one (a stand-in)."""
    tokenizer = getattr(getattr(segmenter, "backbone", None), "tokenizer", None)
    return prompt_cut_note(tokenizer, prompt)
