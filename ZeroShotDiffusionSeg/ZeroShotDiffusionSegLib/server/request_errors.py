"""The server's error answers: always ``{"detail": "<one line>"}``, FastAPI's own validation errors included."""

from __future__ import annotations

from typing import Sequence

MAX_DETAIL_CHARS = 300


def one_line(text: str) -> str:
    """``text`` on one line, at most MAX_DETAIL_CHARS characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_DETAIL_CHARS else flat[: MAX_DETAIL_CHARS - 3] + "..."


def validation_detail(errors: Sequence[dict]) -> str:
    """FastAPI's list of validation errors as one line: 'query wait_s: Input should be ...; body volume: Field required'.

    Only the location and the message: pydantic's 'input' echo (the client's value) is left out.
    """
    parts = []
    for error in errors:
        location = " ".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg", "invalid")))
    return one_line("; ".join(parts) or "invalid request")
