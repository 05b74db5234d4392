"""Frozen feature extraction: preprocessing of the inputs (:mod:`.preprocessing`), point features onto the
heads' grid (:mod:`.projection`), the extractor running both backbones (:mod:`.extractor`) and the
on-disk feature cache with the one batched "cached features or extract" path (:mod:`.cache`)."""
