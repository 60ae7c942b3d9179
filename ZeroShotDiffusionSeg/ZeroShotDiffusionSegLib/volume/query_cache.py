"""The per-volume cache of the unconditional pass: every slice's partition and fp16 queries.

A prompt is applied to these states after the pass (engine/prompt_maps.py), so a second prompt on
the same volume needs no model pass. An entry is keyed by everything that changes the pass and its
slices: the input's SHA-256, the model, dtype, resolution and device kind, the slicing (axis, ROI,
segmented slices), the intensity window, and the pass and merging parameters. The prompt, the normal
prompt, the temperature and the selection threshold are not in the key: they are applied afterwards.

Entries live in memory (the warm worker, the server) and optionally on disk (``--cache-dir``), each
tier bounded by ``limit_mb`` and evicting the least recently used entry. Disk entries are written to
a temporary file and renamed into place. A disk entry is checked against what it must be before it is
used (``entry_problem``): the key it was stored under, the slices, and per slice the partition's dtype,
shape and range, the image shape the slicing gives, and every layer's queries (names, fp16, the shape
the model's layer produces, finite values). One that fails, cannot be read or is truncated is ignored,
logged, and replaced by the rebuilt entry: never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import UserError

log = logging.getLogger("zsdseg.cache")
FORMAT_VERSION = 2  # 2: the key holds each kept layer's query shape
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
        "queries": {name: list(shape) for name, shape in sorted(query_shapes(backbone.unet).items())},
        **{name: getattr(params, name) for name in PASS_PARAMETERS},
    }


def query_shapes(unet) -> Dict[str, Tuple[int, int, int]]:
    """Layer name -> (heads, pixels, head dim) of the queries a pass keeps (``prompt_maps.query_sides``):
    every cross-attention layer coarser than the latent, its side followed through the UNet's down- and
    upsamplers. Known without running the model, so a cached entry can be checked against it."""
    from ..engine.prompt_maps import cross_attention_layers, query_sides

    latent = int(unet.config.sample_size)
    side, sides = latent, {}
    for number, block in enumerate(unet.down_blocks):
        sides[f"down_blocks.{number}"] = side
        side = side // 2 if getattr(block, "downsamplers", None) else side
    sides["mid_block"] = side
    for number, block in enumerate(unet.up_blocks):
        sides[f"up_blocks.{number}"] = side
        side = side * 2 if getattr(block, "upsamplers", None) else side
    kept = set(query_sides(latent))
    shapes = {}
    for name, attn in cross_attention_layers(unet).items():
        block = name.split(".attentions.")[0]
        if sides.get(block) in kept:
            shapes[name] = (int(attn.heads), sides[block] ** 2, int(attn.to_q.out_features) // int(attn.heads))
    return shapes


def _slice_shape(fields: dict) -> Optional[Tuple[int, int]]:
    """(rows, columns) of every slice the key's ROI and axis give (``SlicePlan``: rows = the larger ITK axis)."""
    if "roi" not in fields or "axis" not in fields:
        return None
    lower, upper = fields["roi"]
    row_axis, column_axis = sorted((a for a in range(3) if a != fields["axis"]), reverse=True)
    return upper[row_axis] - lower[row_axis] + 1, upper[column_axis] - lower[column_axis] + 1


def entry_problem(data, fields: dict) -> Optional[str]:
    """Why a loaded disk entry is not the entry of ``fields`` (None: it is). Checks only what the key fixes;
    a key without some field (a test's) skips that check."""
    import torch

    if not isinstance(data, dict) or not isinstance(data.get("slices"), dict):
        return "not a cache entry"
    if data.get("fields") != json.dumps(fields, sort_keys=True):
        return "it was stored under another key"
    if sorted(data["slices"]) != sorted(fields["slices"]):
        return "its slices differ from the key's"
    resolution, image_shape, layers = fields.get("resolution"), _slice_shape(fields), fields.get("queries")
    for index, entry in data["slices"].items():
        labels, queries = entry.get("labels"), entry.get("queries")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int16:
            return f"slice {index}: the partition is not int16"
        if resolution is not None and tuple(labels.shape) != (resolution, resolution):
            return f"slice {index}: partition shape {tuple(labels.shape)}, the model's is ({resolution}, {resolution})"
        if labels.numel() and int(labels.min()) < 0:
            return f"slice {index}: negative region ids"
        shape = tuple(entry.get("shape") or ())
        if len(shape) != 2 or min(shape) < 1 or (image_shape is not None and shape != image_shape):
            return f"slice {index}: image shape {shape}, the slicing gives {image_shape}"
        if not isinstance(queries, dict) or (layers is not None and sorted(queries) != sorted(layers)):
            return f"slice {index}: other attention layers than the model's"
        for name, query in queries.items():
            if not isinstance(query, torch.Tensor) or query.dtype != torch.float16:
                return f"slice {index}: queries of {name} are not fp16"
            if layers is not None and list(query.shape) != list(layers[name]):
                return f"slice {index}: queries of {name} have shape {tuple(query.shape)}, the model's {tuple(layers[name])}"
            if not bool(torch.isfinite(query).all()):
                return f"slice {index}: queries of {name} hold NaN or infinite values"
    return None


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
            problem = entry_problem(data, fields)
        except Exception as error:  # noqa: BLE001 - a damaged entry of any kind is rebuilt, never trusted
            problem = f"it cannot be read ({type(error).__name__})"
        if problem is not None:
            log.warning("query cache: ignoring entry %s in %s (%s); the pass runs again and replaces it",
                        key[:12], self.directory, problem)
            return None
        states = {}
        for index, entry in data["slices"].items():
            queries = {name: query.to(device) if device is not None else query for name, query in entry["queries"].items()}
            labels = entry["labels"].to(device) if device is not None else entry["labels"]
            states[int(index)] = SliceState(labels, tuple(int(v) for v in entry["shape"]), queries)
        os.utime(self._path(key))  # most recently used, for the disk LRU
        return states
