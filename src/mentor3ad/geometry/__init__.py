"""Shared geometry of organized point clouds: the layer below io, backbones, features and datasets.

* :mod:`.observation`: what one observation is (:func:`~.observation.check_observation`) and the
  valid-point rule (:func:`~.observation.valid_point_mask`); numpy only.
* :mod:`.plane`: background plane fit (seeded torch RANSAC, open3d) and removal; :mod:`.cluster`: the
  largest connected cluster on the pixel grid.
* :mod:`.projection`: per-point / per-pixel features -> the heads' R x R grid, valid-cell fraction.
* :mod:`.pointops`: farthest-point sampling, k-NN, 3-NN interpolation in plain torch.
* :mod:`.window_fpfh`: FPFH with pixel-window neighbourhoods in plain torch (an opt-in of the FPFH backbone).

Nothing is imported here, so that the numpy-only parts stay free of torch.
"""
