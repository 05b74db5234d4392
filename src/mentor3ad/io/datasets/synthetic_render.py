"""Synthetic inspection cell: a machined part on a fixture seen by a pinhole RGB-D camera.

The part (metres, part frame, Z up from the plate's top face) is an aluminium plate (100 x 80 mm,
8 mm thick) lying on a dark fixture table, carrying a turned boss (radius 22 mm, 12 mm high, 1.5 mm
chamfer) with a central bore (radius 9 mm, 10 mm deep), four through bolt holes, a milled slot and a
small locating pin. The camera looks down from ~0.35 m. Every sample draws a new pose (in-plane
shift/rotation, small tilt, distance), light direction/intensity, material tint and machining
texture, then renders:

* an organized XYZ map by ray casting the part's height field (fixed-point iteration along each pixel
  ray), with depth noise and invalid pixels (steep walls, dark bore bottom, specular saturation,
  random dropouts) stored as all-zero points, the MVTec 3D-AD convention;
* an RGB image by shading (Lambert + Blinn-Phong) with the surface normals, plus sensor noise.

Defect families (as the paper's real-part experiment, Table VII):

* geometry-only: ``bulge`` (Gaussian bump), ``dent`` (Gaussian dent), ``scratch`` (line groove),
  fractions of a millimetre to ~1.5 mm deep; no colour change (only the shading of the changed
  normals shows them in RGB);
* appearance-only: ``paint`` (irregular paint spot), ``stain`` (soft dark stain); no height change;
* both: ``impact`` (dent with a discoloured rim).

Ground-truth masks are the defect footprint projected into the image. Defect sizes/strengths are
drawn from ranges in :class:`CellConfig` (``defect_strength`` scales all of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage


GEOMETRY_DEFECTS = ("bulge", "dent", "scratch")
APPEARANCE_DEFECTS = ("paint", "stain")
COMBINED_DEFECTS = ("impact",)
DEFECT_TYPES = GEOMETRY_DEFECTS + APPEARANCE_DEFECTS + COMBINED_DEFECTS
DEFECT_FAMILY = {
    **{d: "geometry" for d in GEOMETRY_DEFECTS},
    **{d: "appearance" for d in APPEARANCE_DEFECTS},
    **{d: "both" for d in COMBINED_DEFECTS},
}

# surface ids of the height field
TABLE, PLATE, BOSS_WALL, BOSS_TOP, BORE, PIN, SLOT = range(7)


@dataclass
class CellConfig:
    """Parameters of the synthetic cell (lengths in metres, angles in degrees)."""

    camera_distance: float = 0.35
    field_of_view_m: float = 0.125  # width of the scene seen at the plate's distance
    pose_shift_m: float = 0.0012  # std of in-plane shift (the fixture locates the part)
    pose_yaw_deg: float = 1.0  # std of in-plane rotation
    pose_tilt_deg: float = 0.4  # std of tilt about x and y
    distance_jitter_m: float = 0.0015
    light_jitter: float = 0.15  # std of the light direction's x/y components
    exposure_jitter: float = 0.05
    tint_jitter: float = 0.03
    depth_noise_m: float = 0.00015  # std of depth noise along the ray
    rgb_noise: float = 2.0  # std of RGB noise in 8-bit levels
    dropout_rate: float = 0.003  # random invalid pixels
    defect_strength: float = 1.0  # scales defect depth/height and colour contrast
    # defect parameter ranges (min, max)
    bump_height_m: Tuple[float, float] = (0.0006, 0.0014)
    bump_radius_m: Tuple[float, float] = (0.0025, 0.0045)
    scratch_depth_m: Tuple[float, float] = (0.0003, 0.0007)
    scratch_width_m: Tuple[float, float] = (0.0005, 0.0009)
    scratch_length_m: Tuple[float, float] = (0.012, 0.022)
    spot_radius_m: Tuple[float, float] = (0.003, 0.006)
    paint_alpha: Tuple[float, float] = (0.25, 0.45)
    stain_darkening: Tuple[float, float] = (0.15, 0.28)


@dataclass
class _Pose:
    rotation: np.ndarray  # (3, 3) part -> camera
    translation: np.ndarray  # (3,) metres


def camera_matrix(resolution: Tuple[int, int], config: CellConfig = CellConfig()) -> np.ndarray:
    """(3, 3) pinhole intrinsics K for an (H, W) image: square pixels, centred principal point."""
    height, width = resolution
    f = width * config.camera_distance / config.field_of_view_m
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------- geometry
_PLATE_HALF = (0.05, 0.04)
_PLATE_THICKNESS = 0.008
_BOSS_C = (0.008, 0.0)
_BOSS_R, _BOSS_H, _CHAMFER = 0.022, 0.012, 0.0015
_BORE_R, _BORE_DEPTH = 0.009, 0.010
_HOLES = [(-0.038, -0.028), (-0.038, 0.028), (0.040, -0.030), (0.040, 0.030)]
_HOLE_R = 0.004
_SLOT = (-0.043, -0.022, -0.003, 0.003, 0.002)  # x0, x1, y0, y1, depth
_PIN_C, _PIN_R, _PIN_H = (-0.030, 0.022), 0.004, 0.005


def _part_height(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Height (m, relative to the plate top) and surface id of the defect-free part at (x, y)."""
    h = np.full(x.shape, -_PLATE_THICKNESS)
    sid = np.full(x.shape, TABLE, np.int8)
    on_plate = (np.abs(x) <= _PLATE_HALF[0]) & (np.abs(y) <= _PLATE_HALF[1])
    h[on_plate] = 0.0
    sid[on_plate] = PLATE
    for hx, hy in _HOLES:
        hole = (x - hx) ** 2 + (y - hy) ** 2 < _HOLE_R**2
        h[hole] = -_PLATE_THICKNESS
        sid[hole] = TABLE
    x0, x1, y0, y1, depth = _SLOT
    slot = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    h[slot] = -depth
    sid[slot] = SLOT
    pin = (x - _PIN_C[0]) ** 2 + (y - _PIN_C[1]) ** 2 < _PIN_R**2
    h[pin] = _PIN_H
    sid[pin] = PIN
    r = np.hypot(x - _BOSS_C[0], y - _BOSS_C[1])
    boss = r <= _BOSS_R
    h[boss] = np.minimum(_BOSS_H, _BOSS_H - (r[boss] - (_BOSS_R - _CHAMFER)))
    sid[boss] = np.where(r[boss] < _BOSS_R - _CHAMFER, BOSS_TOP, BOSS_WALL)
    bore = r < _BORE_R
    h[bore] = _BOSS_H - _BORE_DEPTH
    sid[bore] = BORE
    return h, sid


def _defect_host(sid: np.ndarray) -> np.ndarray:
    """Surfaces that can carry a defect: the plate's top face and the boss's top face."""
    return (sid == PLATE) | (sid == BOSS_TOP)


def _segment_distance(x, y, p0, p1):
    d = np.subtract(p1, p0)
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / float(d @ d), 0.0, 1.0)
    return np.hypot(x - (p0[0] + t * d[0]), y - (p0[1] + t * d[1]))


@dataclass
class _Defect:
    kind: str
    center: Tuple[float, float]
    params: Dict[str, float] = field(default_factory=dict)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height change (m) at (x, y)."""
        p = self.params
        if self.kind in ("bulge", "dent", "impact"):
            r2 = (x - self.center[0]) ** 2 + (y - self.center[1]) ** 2
            sign = 1.0 if self.kind == "bulge" else -1.0
            return sign * p["amplitude"] * np.exp(-r2 / (2 * p["sigma"] ** 2))
        if self.kind == "scratch":
            dist = _segment_distance(x, y, (p["x0"], p["y0"]), (p["x1"], p["y1"]))
            return -p["amplitude"] * np.exp(-(dist**2) / (2 * p["sigma"] ** 2))
        return np.zeros_like(x)

    def albedo_weight(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Blend weight in [0, 1] of the defect's colour change at (x, y)."""
        p = self.params
        if self.kind not in ("paint", "stain", "impact"):
            return np.zeros_like(x)
        dx, dy = x - self.center[0], y - self.center[1]
        angle = np.arctan2(dy, dx)
        wobble = sum(p[f"w{k}"] * np.cos(k * angle + p[f"phi{k}"]) for k in (2, 3, 5))
        rho = np.hypot(dx, dy) / (p["radius"] * (1.0 + wobble))
        if self.kind == "paint":  # sharp-edged spot
            return np.clip((1.0 - rho) * 8.0, 0.0, 1.0)
        if self.kind == "stain":  # soft
            return np.clip(1.0 - rho**2, 0.0, 1.0) ** 0.7
        return np.clip(1.0 - np.abs(rho - 0.8) / 0.45, 0.0, 1.0)  # impact: discoloured ring

    def footprint(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground-truth extent of the defect at (x, y) (bool)."""
        p = self.params
        if self.kind in ("bulge", "dent"):
            r2 = (x - self.center[0]) ** 2 + (y - self.center[1]) ** 2
            return r2 < (2.0 * p["sigma"]) ** 2
        if self.kind == "scratch":
            dist = _segment_distance(x, y, (p["x0"], p["y0"]), (p["x1"], p["y1"]))
            return dist < max(2.0 * p["sigma"], 0.0006)
        weight = self.albedo_weight(x, y) > 0.25
        if self.kind == "impact":
            r2 = (x - self.center[0]) ** 2 + (y - self.center[1]) ** 2
            return weight | (r2 < (2.0 * p["sigma"]) ** 2)
        return weight


def random_defect(kind: str, rng: np.random.Generator, config: CellConfig) -> _Defect:
    """A defect of ``kind`` at a random position on the plate's or the boss's top face."""
    s = config.defect_strength
    u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
    for _ in range(200):
        cx, cy = rng.uniform(-0.045, 0.045), rng.uniform(-0.035, 0.035)
        grid = np.linspace(-0.004, 0.004, 5)
        gx, gy = np.meshgrid(cx + grid, cy + grid)
        if _defect_host(_part_height(gx, gy)[1]).all():
            break
    params: Dict[str, float] = {}
    if kind in ("bulge", "dent", "impact"):
        params["amplitude"] = u(config.bump_height_m) * s
        params["sigma"] = u(config.bump_radius_m) / 2.0
    if kind == "scratch":
        length, angle = u(config.scratch_length_m), rng.uniform(0, math.pi)
        params.update(
            amplitude=u(config.scratch_depth_m) * s,
            sigma=u(config.scratch_width_m) / 2.0,
            x0=cx - 0.5 * length * math.cos(angle), y0=cy - 0.5 * length * math.sin(angle),
            x1=cx + 0.5 * length * math.cos(angle), y1=cy + 0.5 * length * math.sin(angle),
        )
    if kind in ("paint", "stain", "impact"):
        params["radius"] = u(config.spot_radius_m) if kind != "impact" else params["sigma"] * 2.2
        for k in (2, 3, 5):
            params[f"w{k}"] = float(rng.uniform(0.0, 0.12))
            params[f"phi{k}"] = float(rng.uniform(0, 2 * math.pi))
        if kind == "paint":
            params["alpha"] = min(1.0, u(config.paint_alpha) * s)
            hue = rng.integers(0, 3)
            params.update(zip(("r", "g", "b"), [(0.78, 0.52, 0.32), (0.42, 0.56, 0.70), (0.70, 0.66, 0.40)][hue]))
        else:
            params["darkening"] = min(0.9, u(config.stain_darkening) * s)
    return _Defect(kind, (float(cx), float(cy)), params)


# ------------------------------------------------------------------------------------------ rendering
def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _random_pose(rng: np.random.Generator, config: CellConfig) -> _Pose:
    # camera looks down at the part: part X -> image right, part Y -> image up, part Z -> towards camera
    base = np.diag([1.0, -1.0, -1.0])
    rotation = base @ _rot("z", rng.normal(0, config.pose_yaw_deg)) @ _rot("x", rng.normal(0, config.pose_tilt_deg)) @ _rot(
        "y", rng.normal(0, config.pose_tilt_deg)
    )
    translation = np.array(
        [rng.normal(0, config.pose_shift_m), rng.normal(0, config.pose_shift_m),
         config.camera_distance + rng.normal(0, config.distance_jitter_m)]
    )
    return _Pose(rotation, translation)


def _value_noise(rng: np.random.Generator, shape: Tuple[int, int], extent: Tuple[float, float]):
    """Smooth random field over the part: returns f(x, y) -> values ~ N(0, 1) (bilinear lattice)."""
    grid = rng.normal(size=shape)
    sx = (shape[1] - 1) / (2 * extent[0])
    sy = (shape[0] - 1) / (2 * extent[1])

    def sample(x, y):
        coords = np.stack([(y + extent[1]) * sy, (x + extent[0]) * sx])
        return ndimage.map_coordinates(grid, coords.reshape(2, -1), order=1, mode="nearest").reshape(x.shape)

    return sample


def render(
    resolution: Tuple[int, int], rng: np.random.Generator, config: CellConfig, defect: Optional[_Defect]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m (invalid = 0), mask (H, W) uint8."""
    height_px, width_px = resolution
    K = camera_matrix(resolution, config)
    pose = _random_pose(rng, config)
    u, v = np.meshgrid(np.arange(width_px, dtype=np.float64), np.arange(height_px, dtype=np.float64))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    rt = pose.rotation.T
    origin = -rt @ pose.translation  # camera centre in the part frame
    direction = rays @ rt.T  # ray directions in the part frame, (H, W, 3)

    def surface(x, y):
        h, sid = _part_height(x, y)
        if defect is not None:
            dh = defect.height(x, y)
            h = h + np.where(_defect_host(sid), dh, 0.0)
        return h, sid

    # fixed-point ray casting of the height field: intersect plane Z = h, re-read h at the hit point
    h = np.zeros((height_px, width_px))
    for _ in range(6):
        s = (h - origin[2]) / direction[..., 2]
        x = origin[0] + s * direction[..., 0]
        y = origin[1] + s * direction[..., 1]
        h, sid = surface(x, y)
    s = (h - origin[2]) / direction[..., 2]
    x = origin[0] + s * direction[..., 0]
    y = origin[1] + s * direction[..., 1]

    # normals from the height field's central differences (part frame)
    e = 0.00025
    hx = (surface(x + e, y)[0] - surface(x - e, y)[0]) / (2 * e)
    hy = (surface(x, y + e)[0] - surface(x, y - e)[0]) / (2 * e)
    normal = np.stack([-hx, -hy, np.ones_like(hx)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    view = -direction / np.linalg.norm(direction, axis=-1, keepdims=True)

    # materials: albedo per surface with per-part texture (machining marks, brushed plate)
    tint = 1.0 + rng.normal(0, config.tint_jitter, 3)
    albedo = np.empty((height_px, width_px, 3))
    base_colours = {
        TABLE: (0.05, 0.06, 0.08), PLATE: (0.60, 0.61, 0.63), BOSS_WALL: (0.55, 0.55, 0.56),
        BOSS_TOP: (0.66, 0.65, 0.63), BORE: (0.12, 0.12, 0.13), PIN: (0.45, 0.40, 0.30), SLOT: (0.50, 0.51, 0.53),
    }
    for sid_value, colour in base_colours.items():
        albedo[sid == sid_value] = np.asarray(colour) * tint
    brushed = _value_noise(rng, (48, 6), (0.06, 0.05))  # streaks along x
    blotches = _value_noise(rng, (10, 12), (0.06, 0.05))
    r_boss = np.hypot(x - _BOSS_C[0], y - _BOSS_C[1])
    turning = np.sin(2 * np.pi * r_boss / 0.0018 + rng.uniform(0, 2 * np.pi))
    texture = 1.0 + 0.035 * brushed(x, y) + 0.03 * blotches(x, y)
    texture = np.where(sid == BOSS_TOP, 1.0 + 0.025 * turning + 0.02 * blotches(x, y), texture)
    albedo *= texture[..., None]
    if defect is not None:
        weight = defect.albedo_weight(x, y) * _defect_host(sid)
        p = defect.params
        if defect.kind == "paint":
            paint = np.array([p["r"], p["g"], p["b"]])
            albedo = albedo * (1 - p["alpha"] * weight[..., None]) + paint * p["alpha"] * weight[..., None]
        elif defect.kind in ("stain", "impact"):
            darkening = p["darkening"]
            brown = np.array([1.0, 0.93, 0.82])  # oxidation tint
            albedo = albedo * (1 - darkening * weight[..., None] * (2 - brown))

    # lighting: one directional light (jittered) + ambient, Blinn-Phong highlight on metal
    light = np.array([rng.normal(0.3, config.light_jitter), rng.normal(-0.4, config.light_jitter), 1.0])
    light /= np.linalg.norm(light)
    exposure = 0.75 * (1.0 + rng.normal(0, config.exposure_jitter))
    lambert = np.clip(normal @ light, 0.0, None)
    half = light[None, None, :] + view
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec_strength = np.where((sid == TABLE) | (sid == BORE), 0.02, 0.22)
    specular = spec_strength * np.clip(np.sum(normal * half, axis=-1), 0.0, None) ** 30
    radiance = exposure * (albedo * (0.25 + 0.75 * lambert)[..., None] + specular[..., None])
    rgb = np.clip(radiance, 0.0, 1.0) ** (1 / 2.2) * 255.0
    rgb = ndimage.gaussian_filter(rgb, sigma=(0.5, 0.5, 0))
    rgb = np.clip(rgb + rng.normal(0, config.rgb_noise, rgb.shape), 0, 255).astype(np.uint8)

    # depth: noise along the ray, invalid pixels stored as zeros
    s_noisy = s * (1.0 + rng.normal(0, config.depth_noise_m / config.camera_distance, s.shape))
    xyz = (rays * s_noisy[..., None]).astype(np.float32)
    facing = np.sum(normal * view, axis=-1)
    invalid = (facing < 0.35) & (rng.random(s.shape) < 0.8)  # steep walls (bore, boss wall, hole edges)
    invalid |= (sid == BORE) & (rng.random(s.shape) < 0.5)  # dark, occluded bore bottom
    invalid |= specular > 0.18  # saturated highlights
    dropout = rng.random(s.shape) < config.dropout_rate
    invalid |= ndimage.binary_dilation(dropout, iterations=1) & (rng.random(s.shape) < 0.6)
    xyz[invalid] = 0.0

    mask = np.zeros((height_px, width_px), np.uint8)
    if defect is not None:
        mask = (defect.footprint(x, y) & _defect_host(sid)).astype(np.uint8)
    return rgb, xyz, mask
