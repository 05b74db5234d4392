"""FPFH: a weight-free 3D backbone that carries real geometry (registered as ``fpfh``).

Fast Point Feature Histograms (Rusu et al. 2009; open3d ``compute_fpfh_feature``), 33 values per point,
on the cleaned organized cloud (resized to ``features.point_image_size``, background plane removed,
largest cluster kept): normals from a hybrid radius / k-NN neighbourhood, FPFH from a second one, then
per grid cell the mean over its valid pixels after a small box filter
(:func:`mentor3ad.geometry.projection.pool_pixel_features`).

The radii are those of BTF ("Back to the Feature", the reference for FPFH on MVTec 3D-AD): its voxel
size 0.05 with clouds in metres gives 100 mm (normals) and 250 mm (FPFH). Both exceed the part, so in effect
the neighbourhoods are the ``normal_max_nn`` and ``feature_max_nn`` nearest points: 15 and 50 in the packaged
config (~1.1 mm and ~2 mm at 224 x 224 on cable_gland; at the 56x56 grid half the cost of BTF's 30 and 100,
this class's defaults, and not lower on validation data: README, "FPFH neighbourhoods at the 56x56 grid");
a sweep of real radii (1.0-2.5 mm, at the 28x28 grid) was not better and radius search costs 3-20x more
(README, "Measured results"). Normals are not oriented (as BTF). No weights: ``point_weights`` must be ``none``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..geometry.projection import pool_pixel_features
from ..geometry.window_fpfh import FPFH_DIM, window_fpfh_image
from ..timing import NO_TIMER, StageTimer
from . import options_dict, register

MIN_POINTS = 16
# neighbourhood bounds: feature_max_nn 5000 made one part's descriptors take 115 s (100: ~2 s, 256: ~7 s at 224 x 224)
MAX_NN, MAX_RADIUS_MM, MAX_SMOOTHING = 256, 1000.0, 15
NEIGHBOURHOODS = ("knn", "window")
MAX_WINDOW_PX = 16
WINDOW_FIELDS = ("neighbourhood", "normal_radius_px", "feature_radius_px", "feature_step_px")


@dataclass
class FPFHOptions:
    """Neighbourhoods in millimetres (radius) and points (max_nn); smoothing_kernel: box filter in pixels
    of the point image before the cell means (odd); orient_normals: orient the normals toward the camera.
    neighbourhood: ``knn`` (open3d, k-nearest / radius search, the fields above) or ``window`` (pixel windows
    of the organized cloud in torch, :mod:`mentor3ad.geometry.window_fpfh`: normals from a (2 r + 1)^2 window
    of ``normal_radius_px`` r, with open3d's sign unless ``orient_normals``; FPFH from a disk of
    ``feature_radius_px`` sampled every ``feature_step_px`` pixels). The max_nn defaults stay BTF's 30 / 100 (the
    packaged config names 15 / 50): a model file that names only some options resolves the others as it was
    trained with."""

    normal_radius_mm: float = 100.0
    normal_max_nn: int = 30
    feature_radius_mm: float = 250.0
    feature_max_nn: int = 100
    orient_normals: bool = False
    smoothing_kernel: int = 3
    neighbourhood: str = "knn"
    normal_radius_px: int = 3
    feature_radius_px: float = 6.0
    feature_step_px: int = 2

    def __post_init__(self):
        if self.neighbourhood not in NEIGHBOURHOODS:
            raise ConfigError(f"point_options.neighbourhood must be one of {NEIGHBOURHOODS}, got {self.neighbourhood!r}")
        if not (1 <= self.normal_radius_px <= MAX_WINDOW_PX and 1 <= self.feature_step_px <= self.feature_radius_px
                <= MAX_WINDOW_PX):
            raise ConfigError(f"point_options: window radii must be in [1, {MAX_WINDOW_PX}] px and feature_step_px in "
                              f"[1, feature_radius_px], got normal_radius_px {self.normal_radius_px}, "
                              f"feature_radius_px {self.feature_radius_px}, feature_step_px {self.feature_step_px}")
        radii, counts = (self.normal_radius_mm, self.feature_radius_mm), (self.normal_max_nn, self.feature_max_nn)
        if not (0 < min(radii) and max(radii) <= MAX_RADIUS_MM and 3 <= min(counts) and max(counts) <= MAX_NN):
            raise ConfigError(f"point_options: FPFH radii must be in (0, {MAX_RADIUS_MM:g}] mm and max_nn in [3, {MAX_NN}], "
                              f"got radii {radii} and max_nn {counts}")
        if not 1 <= self.smoothing_kernel <= MAX_SMOOTHING or self.smoothing_kernel % 2 == 0:
            raise ConfigError(f"point_options.smoothing_kernel must be odd, in [1, {MAX_SMOOTHING}], "
                              f"got {self.smoothing_kernel}")


def fpfh_image(grid: torch.Tensor, valid: torch.Tensor, options: FPFHOptions) -> torch.Tensor:
    """FPFH of every valid point: grid (S, S, 3) metres, valid (S, S) bool -> (33, S, S) float32 (0 elsewhere)."""
    import open3d as o3d

    size = grid.shape[0]
    index = torch.nonzero(valid.reshape(-1)).squeeze(1).cpu().numpy()
    if index.size < MIN_POINTS:
        raise InputError(f"only {index.size} valid 3D points after preprocessing (plane removal, cluster filter); "
                         f"FPFH needs at least {MIN_POINTS}")
    if options.neighbourhood == "window":
        return window_fpfh_image(grid.cpu(), valid.cpu(), options.normal_radius_px, options.feature_radius_px,
                                 options.feature_step_px, options.orient_normals)
    points = grid.reshape(-1, 3).cpu().numpy()[index].astype(np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=options.normal_radius_mm / 1000.0,
                                                                max_nn=options.normal_max_nn))
    if options.orient_normals:
        cloud.orient_normals_towards_camera_location(np.zeros(3))
    histogram = o3d.pipelines.registration.compute_fpfh_feature(
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=options.feature_radius_mm / 1000.0,
                                                    max_nn=options.feature_max_nn))
    full = np.zeros((size * size, FPFH_DIM), np.float32)
    full[index] = np.asarray(histogram.data, dtype=np.float32).T
    return torch.from_numpy(np.ascontiguousarray(full.T).reshape(FPFH_DIM, size, size))


class FPFHBackbone:
    """FPFH descriptors pooled onto the heads' grid (see the module docstring); CPU (open3d)."""

    out_dim = FPFH_DIM

    def __init__(self, options: FPFHOptions, device) -> None:
        self.options = options
        self.device = torch.device(device)

    def identity(self) -> dict:
        options = options_dict(self.options)
        if self.options.neighbourhood == "knn":  # the identity of every k-NN model from before the window option
            options = {k: v for k, v in options.items() if k not in WINDOW_FIELDS}
        return {"name": "fpfh", "weights": "weight-free", "options": options, "out_dim": FPFH_DIM}

    @torch.no_grad()
    def encode(self, grids: Sequence[torch.Tensor], valids: Sequence[torch.Tensor], resolution: int,
               timer: StageTimer = NO_TIMER) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(S, S, 3) metres + (S, S) bool per sample -> [(features (33, R, R), valid (R, R))] on the device;
        ``timer`` gets the stages point_descriptors and projection."""
        out = []
        for grid, valid in zip(grids, valids):
            started = timer.now()
            image = fpfh_image(grid, valid, self.options)
            pooled = timer.tick("point_descriptors", started)
            features, cells = pool_pixel_features(image, valid.cpu(), resolution, self.options.smoothing_kernel)
            out.append((features.to(self.device), cells.to(self.device)))
            timer.tick("projection", pooled)
        return out


@register("points", "fpfh", options=FPFHOptions, weight_free=True)
def build_fpfh(features, options: FPFHOptions, device) -> FPFHBackbone:
    """FPFH has no weights (``features.point_weights``: none or auto)."""
    return FPFHBackbone(options, device)
