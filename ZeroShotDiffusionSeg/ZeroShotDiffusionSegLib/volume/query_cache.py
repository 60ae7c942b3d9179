"""The per-volume cache of the unconditional pass: every slice's partition and fp16 queries.

A prompt is applied to these states after the pass (engine/prompt_maps.py), so a second prompt on
the same volume needs no model pass. An entry is keyed by everything that changes the pass and its
slices: the input's SHA-256, the model, dtype, resolution and device kind, the slicing (axis, ROI,
segmented slices), the intensity window, and the pass and merging parameters. The prompt, the normal
prompt, the temperature and the selection threshold are not in the key: they are applied afterwards.

Entries live in memory (the warm worker, the server) and optionally on disk (``--cache-dir``), each
tier bounded by ``limit_mb`` and evicting the least recently used entry. Disk entries are written to
a temporary file and renamed into place; one that cannot be read, is truncated, or whose recorded key
differs from the one asked for is ignored (and replaced by the rebuilt entry), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional

from ..errors import UserError

FORMAT_VERSION = 1
DEFAULT_LIMIT_MB = 4096.0  # one 300-slice 512 px volume with SD 1.x is ~3.1 GB (README)
SUFFIX = ".zsdq"
PASS_PARAMETERS = ("timestep", "noise_seed", "kl_threshold", "grid_points", "iterations", "refine")


def cache_fields(checksum: str, segmenter, params, axis: int, box, choice, slices) -> dict:
    """Everything the cached states depend on, as plain JSON values (the key is their hash)."""
    backbone = segmenter.backbone
    return {
        "format": FORMAT_VERSION,
        "input_sha256": checksum,
        "model": segmenter.model_id,
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "device": backbone.device.type,
        "resolution": segmenter.model_resolution,
        "axis": int(axis),
        "roi": [list(map(int, box.lower)), list(map(int, box.upper))],
        "intensity": [bool(choice.is_ct), float(choice.lower), float(choice.upper)],
        "slices": [int(index) for index in slices],
        **{name: getattr(params, name) for name in PASS_PARAMETERS},
    }


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]


def _entry_bytes(states) -> int:
    return sum(state.nbytes for state in states.values())


class QueryCache:
    """``get(fields)`` -> {slice index: SliceState} or None; ``put(fields, states)``."""

    def __init__(self, limit_mb: float = DEFAULT_LIMIT_MB, directory: Optional[Path] = None):
        if not limit_mb > 0:
            raise UserError(f"--cache-mb must be positive, got {limit_mb:g}")
        self.limit_bytes = int(limit_mb * 2**20)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"cannot create the cache folder {self.directory}: {error.strerror}") from None
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise UserError(f"cannot write the cache folder {self.directory}")
        self._memory: "OrderedDict[str, Dict[int, object]]" = OrderedDict()
        self.last_event = "off"  # "memory hit", "disk hit", "miss", "stored", "too big to keep": for provenance

    def get(self, fields: dict, device=None) -> Optional[Dict[int, object]]:
        key = cache_key(fields)
        if key in self._memory:
            self._memory.move_to_end(key)
            if self.directory is not None and self._path(key).is_file():
                os.utime(self._path(key))  # one recency for both tiers
            self.last_event = "memory hit"
            return self._memory[key]
        states = self._load(key, fields, device)
        self.last_event = "disk hit" if states is not None else "miss"
        if states is not None:
            self._remember(key, states)
        return states

    def held(self) -> list:
        """The entries in memory ({slice index: SliceState} each), least recently used first."""
        return list(self._memory.values())

    def put(self, fields: dict, states: Dict[int, object]) -> None:
        key = cache_key(fields)
        if _entry_bytes(states) > self.limit_bytes:
            self.last_event = "too big to keep"
            return
        self._remember(key, states)
        if self.directory is not None:
            self._save(key, fields, states)
        self.last_event = "stored"

    def _remember(self, key: str, states) -> None:
        self._memory[key] = states
        self._memory.move_to_end(key)
        while sum(_entry_bytes(entry) for entry in self._memory.values()) > self.limit_bytes:
            self._memory.popitem(last=False)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def _save(self, key: str, fields: dict, states) -> None:
        import torch

        data = {"fields": json.dumps(fields, sort_keys=True), "slices": {
            int(index): {"labels": state.labels.cpu(), "shape": list(state.image_shape),
                         "queries": {name: query.cpu() for name, query in state.queries.items()}}
            for index, state in states.items()}}
        temporary = self.directory / f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:
            torch.save(data, temporary)
            os.replace(temporary, self._path(key))
        finally:
            temporary.unlink(missing_ok=True)
        self._evict_disk(keep=self._path(key))

    def _evict_disk(self, keep: Path) -> None:
        entries = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda path: path.stat().st_mtime)
        total = sum(path.stat().st_size for path in entries)
        for path in entries:
            if total <= self.limit_bytes:
                break
            if path != keep:
                total -= path.stat().st_size
                path.unlink(missing_ok=True)

    def _load(self, key: str, fields: dict, device) -> Optional[Dict[int, object]]:
        if self.directory is None or not self._path(key).is_file():
            return None
        import torch

        from ..engine.prompt_maps import SliceState

        try:
            data = torch.load(self._path(key), map_location="cpu", weights_only=True)
            if data["fields"] != json.dumps(fields, sort_keys=True):
                return None
            states = {}
            for index, entry in data["slices"].items():
                queries = {name: query.to(device) if device is not None else query for name, query in entry["queries"].items()}
                if entry["labels"].dtype != torch.int16 or any(query.dtype != torch.float16 for query in queries.values()):
                    return None
                labels = entry["labels"].to(device) if device is not None else entry["labels"]
                states[int(index)] = SliceState(labels, tuple(int(v) for v in entry["shape"]), queries)
            if sorted(states) != sorted(fields["slices"]):
                return None
        except Exception:  # noqa: BLE001 - a damaged entry of any kind is rebuilt, never trusted
            return None
        os.utime(self._path(key))  # most recently used, for the disk LRU
        return states
