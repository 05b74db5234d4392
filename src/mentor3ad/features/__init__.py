"""Frozen feature extraction: preprocessing of the inputs (:mod:`.preprocessing`), the extractor running both
backbones (:mod:`.extractor`) and the on-disk feature cache with the one batched "cached features or
extract" path (:mod:`.cache`). The geometry they share with the backbones (plane, cluster, projection onto
the heads' grid) lives one layer lower, in :mod:`mentor3ad.geometry`."""
