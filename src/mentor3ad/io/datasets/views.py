"""Extra training views of good parts: the image and the organized cloud turned together by quarter turns.

A camera above the part sees it placed at any angle about the viewing axis; with few good parts the heads
see few of those. A quarter turn (``np.rot90`` of the H x W grids) keeps every 3D point where it is (only the
pixel order changes, so geometric descriptors of a point do not change) and shows the RGB backbone the part
as if it had been placed turned. Mirror images are not offered: a mirrored part (a left-hand thread) is not a
good part. Chosen on dev-real at 10, 20 and 50 cable_gland parts (README "Few good parts"); numpy only.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ...config import VIEW_AUGMENTATIONS
from ...errors import InputError
from ...types import Sample


def quarter_turns(sample: Sample) -> List[Sample]:
    """The sample and its 3 quarter turns (counter-clockwise 90, 180, 270 degrees): rgb (W, H, 3) / (H, W, 3)
    uint8 and xyz in metres turned together, masks too; names get "@rot90" / "@rot180" / "@rot270"."""
    views = [sample]
    for turns in (1, 2, 3):
        views.append(Sample(rgb=np.ascontiguousarray(np.rot90(sample.rgb, turns)),
                            xyz=np.ascontiguousarray(np.rot90(sample.xyz, turns)),
                            mask=None if sample.mask is None else np.ascontiguousarray(np.rot90(sample.mask, turns)),
                            label=sample.label, defect=sample.defect, name=f"{sample.name}@rot{90 * turns}",
                            source=None, stamp_ns=sample.stamp_ns))
    return views


def augmentation_for(mode: str, parts: int, augment_below: int) -> str:
    """The augmentation ``mode`` ("auto", "none", "rot90") resolves to for ``parts`` training parts: "auto" is
    "rot90" below ``augment_below`` parts, else "none"."""
    if mode not in VIEW_AUGMENTATIONS:
        raise InputError(f"view augmentation must be one of {', '.join(VIEW_AUGMENTATIONS)}, got {mode!r}")
    if mode == "auto":
        return "rot90" if parts < augment_below else "none"
    return mode


def training_views(samples: Sequence[Sample], mode: str) -> List[Sample]:
    """The training samples with their extra views for a resolved ``mode`` ("none": the samples as given)."""
    if mode == "none":
        return list(samples)
    return [view for sample in samples for view in quarter_turns(sample)]


__all__ = ["VIEW_AUGMENTATIONS", "augmentation_for", "quarter_turns", "training_views"]
