"""Eyecandies raw layout -> MVTec 3D-AD layout.

Raw layout (per category): ``<src>/{train,val,test_public}/data/<id>_image_4.png`` (RGB, the
all-lights image used by the 3D-AD benchmarks), ``<id>_depth.png`` (16-bit normalised depth),
``<id>_info_depth.yaml`` (``normalization: {min, max}`` in metres), ``<id>_pose.txt`` (4x4 world ->
camera transform), ``<id>_mask.png`` (test only; nonzero = defect).

Conversion (matching the benchmarks' published preprocessing, with its bugs fixed):

* depth [m] = min + png / 65535 * (max - min);
* camera point = depth * ((u - W/2) / f, (v - H/2) / f, 1) with f = ``focal_length`` (711.11 px for
  the 512 x 512 renders), then, with ``frame="world"`` (default, as the public converter), mapped by
  the inverse pose into the object/world frame; ``frame="camera"`` keeps camera coordinates;
* background/invalid pixels (png value 0 or 65535, non-finite depth, beyond ``max_depth_m``, or --
  with ``plane_distance_m`` -- within that distance of the dominant plane the candy lies on, found
  by RANSAC) are written as all-zero points *after* the transform (the public converter transforms
  the zero points too, which leaves the camera centre's world position in the background);
* paths are joined relative to ``src``/``dst`` (the public converter's absolute-path join wrote
  outside the destination);
* ``train`` -> ``train/good``, ``val`` -> ``validation/good``, ``test_public`` -> ``test/good`` or
  ``test/bad`` by whether the mask has a defect pixel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from ...errors import InputError
from ...types import Sample
from .mvtec import write_mvtec_sample

PathLike = Union[str, Path]
EYECANDIES_FOCAL_LENGTH = 711.11
SPLIT_MAP = {"train": "train", "val": "validation", "test_public": "test"}


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InputError(f"missing file {path}")
    with Image.open(path) as im:
        return np.asarray(im)


def load_eyecandies_depth(depth_png: PathLike, info_yaml: PathLike) -> np.ndarray:
    """(H, W) float64 depth in metres, NaN where the png holds 0 or 65535 (no surface)."""
    import yaml

    depth_png, info_yaml = Path(depth_png), Path(info_yaml)
    raw = _read_png(depth_png)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
        raise InputError(f"{depth_png}: expected a 16-bit single-channel depth PNG, got {raw.shape} {raw.dtype}")
    if not info_yaml.is_file():
        raise InputError(f"missing file {info_yaml}")
    info = yaml.safe_load(info_yaml.read_text()) or {}
    try:
        lo, hi = float(info["normalization"]["min"]), float(info["normalization"]["max"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{info_yaml}: needs normalization: {{min, max}} in metres ({exc})") from exc
    if not hi > lo:
        raise InputError(f"{info_yaml}: normalization max {hi} must be greater than min {lo}")
    raw = raw.astype(np.float64)
    depth = lo + raw / 65535.0 * (hi - lo)
    depth[(raw <= 0) | (raw >= 65535)] = np.nan
    return depth


def dominant_plane_mask(points: np.ndarray, valid: np.ndarray, distance_m: float, iterations: int = 200,
                        seed: int = 0) -> np.ndarray:
    """(H, W) bool: valid points within ``distance_m`` of the plane with most inliers.

    The plane comes from :func:`mentor3ad.geometry.plane.fit_plane_ransac` (the pipeline's own
    seeded RANSAC + least-squares refinement) on up to 20000 of the valid points."""
    import torch

    from ...geometry.plane import fit_plane_ransac

    pts = points[valid].astype(np.float64)
    out = np.zeros(valid.shape, bool)
    if len(pts) < 3:
        return out
    rng = np.random.default_rng(seed)
    probe = pts[rng.choice(len(pts), size=min(len(pts), 20000), replace=False)]
    plane = fit_plane_ransac(torch.from_numpy(probe), distance_m, iterations=iterations, seed=seed)
    if plane is None:
        return out
    plane = plane.numpy()
    out[valid] = np.abs(pts @ plane[:3] + plane[3]) < distance_m
    return out


def depth_to_points(
    depth: np.ndarray, pose: Optional[np.ndarray], focal_length: float = EYECANDIES_FOCAL_LENGTH,
    frame: str = "world", max_depth_m: Optional[float] = None, plane_distance_m: Optional[float] = None,
) -> np.ndarray:
    """(H, W) depth (m, NaN invalid) -> (H, W, 3) float32 points, invalid/background all-zero."""
    if frame not in ("world", "camera"):
        raise InputError(f"frame must be 'world' or 'camera', got '{frame}'")
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    cam = np.stack([(u - width / 2.0) / focal_length * depth, (v - height / 2.0) / focal_length * depth, depth], -1)
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth_m is not None:
        valid &= depth <= max_depth_m
    if frame == "world":
        if pose is None or np.asarray(pose).shape != (4, 4):
            raise InputError("frame 'world' needs the 4x4 pose")
        inv = np.linalg.inv(np.asarray(pose, dtype=np.float64))
        cam = cam @ inv[:3, :3].T + inv[:3, 3]
    if plane_distance_m is not None:
        valid &= ~dominant_plane_mask(cam, valid, plane_distance_m)
    points = np.where(valid[..., None], cam, 0.0).astype(np.float32)
    return points


def load_eyecandies_sample(
    data_dir: PathLike, sample_id: str, focal_length: float = EYECANDIES_FOCAL_LENGTH, frame: str = "world",
    max_depth_m: Optional[float] = None, image_index: int = 4, plane_distance_m: Optional[float] = None,
) -> Sample:
    """One raw sample ``<data_dir>/<sample_id>_*`` as a Sample (mask from ``_mask.png`` when present)."""
    data_dir = Path(data_dir)
    rgb = _read_png(data_dir / f"{sample_id}_image_{image_index}.png")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
    depth = load_eyecandies_depth(data_dir / f"{sample_id}_depth.png", data_dir / f"{sample_id}_info_depth.yaml")
    if depth.shape != rgb.shape[:2]:
        raise InputError(f"{data_dir}/{sample_id}: depth size {depth.shape[::-1]} differs from image size {rgb.shape[1::-1]}")
    pose = None
    pose_path = data_dir / f"{sample_id}_pose.txt"
    if frame == "world":
        if not pose_path.is_file():
            raise InputError(f"missing file {pose_path}")
        pose = np.loadtxt(pose_path)
        if pose.shape != (4, 4):
            raise InputError(f"{pose_path}: expected a 4x4 matrix, got shape {pose.shape}")
    xyz = depth_to_points(depth, pose, focal_length, frame, max_depth_m, plane_distance_m)
    mask = None
    mask_path = data_dir / f"{sample_id}_mask.png"
    if mask_path.is_file():
        m = _read_png(mask_path)
        mask = ((m[..., 0] if m.ndim == 3 else m) > 0).astype(np.uint8)
    return Sample(rgb=rgb, xyz=xyz, mask=mask, source=str(data_dir / f"{sample_id}_image_{image_index}.png"))


def convert_eyecandies(
    src: PathLike, dst: PathLike, focal_length: float = EYECANDIES_FOCAL_LENGTH, frame: str = "world",
    max_depth_m: Optional[float] = None, image_index: int = 4, plane_distance_m: Optional[float] = None,
) -> Dict[str, int]:
    """Convert one Eyecandies category folder into an MVTec 3D-AD category folder; returns counts."""
    src, dst = Path(src), Path(dst)
    splits = [s for s in SPLIT_MAP if (src / s / "data").is_dir()]
    if not splits:
        raise InputError(f"{src} is not an Eyecandies category folder: none of "
                         f"{', '.join(s + '/data' for s in SPLIT_MAP)} exists")
    counts: Dict[str, int] = {}
    for split in splits:
        data_dir = src / split / "data"
        ids = sorted(p.name[: -len(f"_image_{image_index}.png")] for p in data_dir.glob(f"*_image_{image_index}.png"))
        if not ids:
            raise InputError(f"{data_dir}: no *_image_{image_index}.png files")
        for sample_id in ids:
            sample = load_eyecandies_sample(data_dir, sample_id, focal_length, frame, max_depth_m, image_index,
                                            plane_distance_m)
            out_split = SPLIT_MAP[split]
            if out_split == "test":
                if sample.mask is None:
                    raise InputError(f"{data_dir}: test sample {sample_id} has no {sample_id}_mask.png")
                defect = "bad" if sample.mask.any() else "good"
            else:
                defect = "good"
                sample.mask = None
            write_mvtec_sample(dst, out_split, defect, sample_id, sample)
            key = f"{out_split}/{defect}"
            counts[key] = counts.get(key, 0) + 1
    return counts
