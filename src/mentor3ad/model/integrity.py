"""Is a model file one model, and the one expected? A content digest inside the file and a pin outside it.

* :func:`content_digest`: SHA-256 over every head tensor (name, dtype, shape, bytes; sorted by name) and
  the metadata JSON exactly as stored (config, threshold and its record, backbone identity, training
  info with the input profile). :func:`mentor3ad.model.checkpoint.write_checkpoint` stores it in the
  safetensors header (``__metadata__["mentor3ad_digest"]``); reading the tensors verifies it
  (:func:`verify_digest`): a file whose parts come from different models (e.g. the Voting Module's
  tensors of another valid model grafted in, or a threshold edited in the metadata) is refused.
  Files written before the digest load with a warning (their parts cannot be proven one model).
  The digest has no secret: it proves consistency (no mix-up, no partial edit by a tool), not who wrote
  the file; for that, pin the file.
* :func:`file_sha256` / :func:`check_pin`: the file's SHA-256 (as ``sha256sum`` prints it) against an
  allow-list (the inspector's ``model_sha256`` parameter): only an expected file is loaded.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from ..errors import ConfigError, ModelLoadError

DIGEST_KEY = "mentor3ad_digest"
DIGEST_PREFIX = "sha256:"
_DOMAIN = b"mentor3ad-model-content-v1\0"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
LOG = logging.getLogger(__name__)


def content_digest(tensors: Dict[str, "object"], metadata_json: str) -> str:
    """``sha256:<hex>`` of the head tensors (name -> torch tensor, names without the file's prefix) and the
    stored metadata JSON string."""
    digest = hashlib.sha256(_DOMAIN)
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    digest.update(b"\0metadata\0" + metadata_json.encode())
    return DIGEST_PREFIX + digest.hexdigest()


def verify_digest(path: Path, stored: Optional[str], tensors: Dict[str, "object"], metadata_json: str) -> bool:
    """ModelLoadError when the file's digest ``stored`` does not match its content; False (with a warning)
    for a file without one (written before digests), True when it matches."""
    if stored is None:
        LOG.warning("%s has no content digest (written before mentor3ad stored one): its tensors and metadata "
                    "cannot be proven to be one model; retrain or re-calibrate it to get a file with a digest, "
                    "or pin the file's sha256 (inspector parameter model_sha256)", path)
        return False
    if not isinstance(stored, str) or content_digest(tensors, metadata_json) != stored:
        raise ModelLoadError(f"{path}: its content does not match its digest: the tensors or the metadata were "
                             "changed after it was written, or come from different models; refusing the model")
    return True


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of the file's bytes (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_pins(text: str) -> Sequence[str]:
    """The allowed SHA-256s of ``text`` (hex, separated by commas or spaces; empty: any file); ConfigError
    for anything that is not 64 hex digits."""
    pins = [p.lower() for p in re.split(r"[\s,]+", text or "") if p]
    bad = [p for p in pins if not _HEX64.match(p)]
    if bad:
        raise ConfigError(f"model_sha256 must be 64 hex digits (sha256sum of the model file), comma-separated for "
                          f"several, got {bad[0]!r}")
    return pins


def check_pin(path: Union[str, Path], pins: Sequence[str]) -> str:
    """The file's SHA-256 when it is one of ``pins`` (or ``pins`` is empty), else ModelLoadError naming
    both (the file's hash, not its content)."""
    try:
        actual = file_sha256(path)
    except OSError as err:
        raise ModelLoadError(f"cannot read model file {path}: {err.strerror or type(err).__name__}") from None
    if pins and actual not in pins:
        raise ModelLoadError(f"model file {path} has sha256 {actual}, which is not the pinned model_sha256 "
                             f"({', '.join(p[:12] + '...' for p in pins)}); refusing to load it")
    return actual


__all__ = ["DIGEST_KEY", "content_digest", "verify_digest", "file_sha256", "parse_pins", "check_pin"]
