"""On-disk feature cache and the one batched "cached features or extract" path.

``cache_dir/<identity sha256[:16]>/<input sha256>.safetensors`` holds the :class:`Features` of one input
(keyed by the raw input bytes and the extractor identity + precision), so training and evaluation runs
skip the backbones. :func:`extract_features` is what training, calibration, evaluation and ablations
call: cached entries are loaded, misses are extracted in batches (one RGB forward and one 3D backbone
call per batch) and stored.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..io.files import atomic_write_bytes
from ..timing import NO_TIMER, StageTimer
from .extractor import FeatureExtractor, Features

LOG = logging.getLogger(__name__)


def input_sha256(rgb: np.ndarray, xyz: np.ndarray) -> str:
    """sha256 of the raw input arrays (shape, dtype and bytes of both)."""
    digest = hashlib.sha256()
    for array in (rgb, xyz):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}|{array.dtype.str}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


class FeatureCache:
    """On-disk feature cache of one extractor (see module docstring)."""

    def __init__(self, cache_dir: str | Path, extractor: FeatureExtractor):
        self.extractor = extractor
        self.identity_key = extractor.identity_hash()
        self.directory = Path(cache_dir) / self.identity_key[:16]
        self.directory.mkdir(parents=True, exist_ok=True)
        identity_file = self.directory / "identity.json"
        if not identity_file.exists():
            identity_file.write_text(json.dumps(extractor.identity(), indent=2, sort_keys=True))
        self.hits = 0
        self.misses = 0

    def path(self, sample) -> Path:
        return self.directory / f"{input_sha256(sample.rgb, sample.xyz)}.safetensors"

    def _load(self, path: Path) -> Optional[Features]:
        from safetensors.torch import load_file

        if not path.exists():
            return None
        try:
            stored = load_file(str(path), device=str(self.extractor.device))
            return Features(rgb=stored["rgb"], xyz=stored["xyz"], valid=stored["valid"])
        except Exception as exc:  # noqa: BLE001 - a corrupt entry is recomputed
            LOG.warning("feature cache entry %s unreadable (%s); recomputing", path, exc)
            return None

    def _store(self, path: Path, features: Features, name: str) -> None:
        from safetensors.torch import save

        tensors = {"rgb": features.rgb.contiguous().cpu(), "xyz": features.xyz.contiguous().cpu(),
                   "valid": features.valid.contiguous().cpu()}
        atomic_write_bytes(path, save(tensors, metadata={"identity": self.identity_key, "name": name}), durable=False)

    def get_batch(self, samples: Sequence, batch_size: int = 8, timer: StageTimer = NO_TIMER) -> List[Features]:
        """Features of several samples; misses are computed with ``extract_batch`` in chunks of ``batch_size``
        (their stages ticked into ``timer``)."""
        paths = [self.path(s) for s in samples]
        results: List[Optional[Features]] = [self._load(p) for p in paths]
        self.hits += sum(r is not None for r in results)
        missing = [i for i, r in enumerate(results) if r is None]
        for start in range(0, len(missing), max(1, batch_size)):
            chunk = missing[start:start + max(1, batch_size)]
            computed = self.extractor.extract_batch([samples[i].rgb for i in chunk], [samples[i].xyz for i in chunk],
                                                    timer)
            for i, features in zip(chunk, computed):
                self._store(paths[i], features, str(getattr(samples[i], "name", "")))
                results[i] = features
            self.misses += len(chunk)
        return results

    def get(self, sample) -> Features:
        """Features of one ``mentor3ad.types.Sample`` (loaded when cached, else computed and stored)."""
        return self.get_batch([sample])[0]


def extract_features(samples: Sequence, extractor: FeatureExtractor, cache_dir=None, batch_size: int = 8,
                     progress: bool = False, desc: str = "features", timer: StageTimer = NO_TIMER) -> List[Features]:
    """Features of ``samples`` (list of :class:`mentor3ad.types.Sample`), in order: from the cache when
    ``cache_dir`` is given, else extracted; backbones run in batches of ``batch_size`` (stages into ``timer``)."""
    from tqdm import tqdm

    if len(samples) == 0:
        raise ValueError("no samples given")
    cache = FeatureCache(cache_dir, extractor) if cache_dir is not None else None
    out: List[Features] = []
    with tqdm(total=len(samples), desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, len(samples), max(1, batch_size)):
            chunk = samples[start:start + max(1, batch_size)]
            if cache is not None:
                out.extend(cache.get_batch(chunk, batch_size, timer))
            else:
                out.extend(extractor.extract_batch([s.rgb for s in chunk], [s.xyz for s in chunk], timer))
            bar.update(len(chunk))
    return out


__all__ = ["FeatureCache", "extract_features", "input_sha256"]
