"""MVTec 3D-AD layout: ``<root>/{train,validation,test}/<defect>/{rgb/*.png, xyz/*.tiff, gt/*.png}``.

``root`` is one category folder (e.g. ``.../mvtec3d/cable_gland``). RGB is 8-bit RGB PNG, XYZ is an
organized (H, W, 3) float32 TIFF in metres with background/invalid points all-zero, ground truth is a
0/255 PNG (the train and validation splits have none; they are all good).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np

from ...errors import InputError
from ...types import Sample

SPLITS = ("train", "validation", "test")
PathLike = Union[str, Path]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def load_mvtec_sample(rgb_path: PathLike, xyz_path: PathLike, gt_path: Optional[PathLike] = None) -> Sample:
    """Read one sample's files. rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m, mask (H, W) uint8 0/1.

    ``gt_path`` None (or a missing file) gives ``mask=None``. Raises ValueError naming the file when a
    file is missing, unreadable or the sizes disagree.
    """
    import tifffile

    rgb_path, xyz_path = Path(rgb_path), Path(xyz_path)
    for path in (rgb_path, xyz_path):
        if not path.is_file():
            raise InputError(f"missing file {path}")
    rgb = _read_png(rgb_path)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise InputError(f"{rgb_path}: expected an 8-bit RGB image, got shape {rgb.shape} {rgb.dtype}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    try:
        xyz = np.asarray(tifffile.imread(xyz_path), dtype=np.float32)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise InputError(f"{xyz_path}: cannot read the XYZ TIFF ({exc})") from exc
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise InputError(f"{xyz_path}: expected an organized (H, W, 3) XYZ map, got shape {xyz.shape}")
    if xyz.shape[:2] != rgb.shape[:2]:
        raise InputError(
            f"{xyz_path}: XYZ size {xyz.shape[1]}x{xyz.shape[0]} does not match RGB size {rgb.shape[1]}x{rgb.shape[0]}"
        )
    mask = None
    if gt_path is not None and Path(gt_path).is_file():
        gt = _read_png(Path(gt_path))
        if gt.ndim == 3:
            gt = gt[..., 0]
        if gt.shape != rgb.shape[:2]:
            raise InputError(f"{gt_path}: mask size {gt.shape[::-1]} does not match RGB size {rgb.shape[1::-1]}")
        mask = (gt > 0).astype(np.uint8)
    return Sample(rgb=rgb, xyz=xyz, mask=mask, source=str(rgb_path))


def list_defects(root: PathLike, split: str) -> List[str]:
    """Defect folder names of a split, ``good`` first then alphabetical."""
    split_dir = Path(root) / split
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and (p / "rgb").is_dir())
    return sorted(names, key=lambda n: (n != "good", n))


def load_mvtec_split(
    root: PathLike, split: str, shots: Optional[int] = None, defects: Optional[Iterable[str]] = None
) -> List[Sample]:
    """All samples of a split, ordered by defect (good first) then file name.

    shots: keep only the first K samples (by file name) -- the paper's few-shot training subsets;
    only meaningful for ``train``. defects: restrict to these defect folders.
    Sample.name is ``"<split>/<defect>/<stem>"``; label 0 for ``good``, 1 otherwise; test samples get
    a mask (all-zero for good samples without a gt file).
    """
    root = Path(root)
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    if not (root / split).is_dir():
        raise InputError(f"{root} is not an MVTec 3D-AD category folder: {root / split} does not exist")
    available = list_defects(root, split)
    if defects is not None:
        wanted = list(defects)
        unknown = [d for d in wanted if d not in available]
        if unknown:
            raise InputError(f"{root / split}: no defect folder(s) {', '.join(unknown)}; it has {', '.join(available)}")
        available = [d for d in available if d in wanted]
    if shots is not None and shots <= 0:
        raise InputError(f"shots must be a positive number of samples, got {shots}")
    samples: List[Sample] = []
    for defect in available:
        ddir = root / split / defect
        for rgb_path in sorted((ddir / "rgb").glob("*.png")):
            stem = rgb_path.stem
            xyz_path = ddir / "xyz" / f"{stem}.tiff"
            gt_path = ddir / "gt" / f"{stem}.png"
            sample = load_mvtec_sample(rgb_path, xyz_path, gt_path if gt_path.is_file() else None)
            sample.defect = defect
            sample.label = 0 if defect == "good" else 1
            sample.name = f"{split}/{defect}/{stem}"
            if split == "test" and sample.mask is None:
                if defect != "good":
                    raise InputError(f"missing ground truth {gt_path} for anomalous test sample")
                sample.mask = np.zeros(sample.rgb.shape[:2], np.uint8)
            samples.append(sample)
    if not samples:
        raise InputError(f"no samples found under {root / split}")
    if shots is not None:
        samples = samples[:shots]
    return samples


def write_mvtec_sample(root: PathLike, split: str, defect: str, index: Union[int, str], sample: Sample) -> Path:
    """Write one sample as ``<root>/<split>/<defect>/{rgb,xyz,gt}/<index>``; returns the rgb path.

    rgb: PNG, xyz: float32 (H, W, 3) TIFF (NaN written as 0, MVTec's background convention),
    gt: 0/255 PNG written when ``sample.mask`` is set (and always for the test split).
    """
    import tifffile
    from PIL import Image

    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    stem = f"{index:03d}" if isinstance(index, int) else str(index)
    ddir = Path(root) / split / defect
    rgb = np.asarray(sample.rgb)
    xyz = np.asarray(sample.xyz, dtype=np.float32)
    if rgb.shape[:2] != xyz.shape[:2] or rgb.ndim != 3 or xyz.ndim != 3:
        raise InputError(f"rgb {rgb.shape} and xyz {xyz.shape} must be (H, W, 3) of the same size")
    for sub in ("rgb", "xyz"):
        (ddir / sub).mkdir(parents=True, exist_ok=True)
    rgb_path = ddir / "rgb" / f"{stem}.png"
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(rgb_path)
    xyz = np.where(np.isfinite(xyz).all(-1, keepdims=True), xyz, 0.0).astype(np.float32)
    # same TIFF layout as MVTec 3D-AD: one page, 3 contiguous float32 samples per pixel
    tifffile.imwrite(ddir / "xyz" / f"{stem}.tiff", xyz, photometric="rgb", planarconfig="contig")
    mask = sample.mask
    if mask is None and split == "test":
        mask = np.zeros(rgb.shape[:2], np.uint8)
    if mask is not None:
        (ddir / "gt").mkdir(parents=True, exist_ok=True)
        Image.fromarray(((np.asarray(mask) > 0) * 255).astype(np.uint8), "L").save(ddir / "gt" / f"{stem}.png")
    return rgb_path
