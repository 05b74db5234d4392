"""The synthetic inspection cell as data: samples, the dataset folder and its camera (renderer:
:mod:`.synthetic_render`, which documents the scene and the defect families).

* :func:`generate_sample`: one in-memory sample from a seed or a random generator;
* :func:`cell_sample`: the sample ``split/defect/index`` exactly as :func:`generate_cell_dataset` draws it
  (the same seed stream), so tools can use the dataset's samples without reading the folder;
* :func:`generate_cell_dataset`: the MVTec 3D-AD category folder + ``camera_info.yaml`` + ``dataset.json``;
* :func:`load_camera_matrix`: K from a ``camera_info.yaml`` (ROS camera_calibration format).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import ConfigError
from ...types import Sample
from .synthetic_render import DEFECT_FAMILY, DEFECT_TYPES, CellConfig, camera_matrix, random_defect, render

SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}


def generate_sample(
    seed: Union[int, np.random.Generator] = 0,
    resolution: Tuple[int, int] = (64, 64),
    defect: Optional[str] = None,
    config: Optional[CellConfig] = None,
    name: str = "",
) -> Sample:
    """One in-memory sample of the cell. defect: None/"good" or one of DEFECT_TYPES.

    Deterministic for an int seed. Anomalous samples always have a non-empty mask (re-drawn when the
    defect would be invisible at this resolution).
    """
    config = config or CellConfig()
    kind = None if defect in (None, "good") else defect
    if kind is not None and kind not in DEFECT_TYPES:
        raise ConfigError(f"unknown defect type '{defect}'; expected good or one of {', '.join(DEFECT_TYPES)}")
    if len(resolution) != 2 or min(resolution) < 8:
        raise ConfigError(f"resolution must be (H, W) with both >= 8, got {resolution}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    for _ in range(20):
        d = random_defect(kind, rng, config) if kind else None
        rgb, xyz, mask = render(tuple(int(r) for r in resolution), rng, config, d)
        if kind is None or mask.sum() >= 2:
            break
    else:
        raise ConfigError(f"could not place a visible '{defect}' defect at resolution {resolution}")
    return Sample(
        rgb=rgb, xyz=xyz, mask=mask, label=0 if kind is None else 1, defect=kind or "good", name=name
    )


def cell_sample(split: str, defect: str, index: int, resolution: Tuple[int, int] = (224, 224), seed: int = 0,
                config: Optional[CellConfig] = None) -> Sample:
    """Sample ``split/defect/index`` exactly as :func:`generate_cell_dataset` (same ``seed``) writes it.

    Its stream is (seed, split code, defect code, index): independent of the other splits' sizes."""
    code = (DEFECT_TYPES.index(defect) + 1) if defect != "good" else 0
    rng = np.random.default_rng([seed, SPLIT_CODES[split], code, index])
    return generate_sample(rng, resolution, defect, config, name=f"{split}/{defect}/{index:03d}")


def generate_cell_dataset(
    out_dir: Union[str, Path],
    n_train: int = 20,
    n_val: int = 5,
    n_test_good: int = 10,
    n_test_per_defect: int = 4,
    resolution: Tuple[int, int] = (224, 224),
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
    config: Optional[CellConfig] = None,
    frame_id: str = "camera_optical_frame",
) -> Dict[str, object]:
    """Write the cell as an MVTec 3D-AD category folder plus ``camera_info.yaml`` and ``dataset.json``.

    Each sample uses its own seed derived from (seed, split, index), so the dataset is deterministic
    and a split's content does not depend on the sizes of the others. Returns the dataset.json dict.
    """
    import yaml

    from .mvtec import write_mvtec_sample

    config = config or CellConfig()
    unknown = [d for d in defect_types if d not in DEFECT_TYPES]
    if unknown:
        raise ConfigError(f"unknown defect type(s) {', '.join(unknown)}; expected some of {', '.join(DEFECT_TYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plan: List[Tuple[str, str, int]] = [("train", "good", i) for i in range(n_train)]
    plan += [("validation", "good", i) for i in range(n_val)]
    plan += [("test", "good", i) for i in range(n_test_good)]
    plan += [("test", d, i) for d in defect_types for i in range(n_test_per_defect)]
    counts: Dict[str, int] = {}
    for split, defect, index in plan:
        sample = cell_sample(split, defect, index, resolution, seed, config)
        write_mvtec_sample(out, split, defect, index, sample)
        key = f"{split}/{defect}"
        counts[key] = counts.get(key, 0) + 1
    K = camera_matrix(resolution, config)
    camera_info = {
        "image_width": int(resolution[1]), "image_height": int(resolution[0]), "frame_id": frame_id,
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.reshape(-1).tolist()},
        "distortion_model": "plumb_bob", "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).reshape(-1).tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()},
    }
    (out / "camera_info.yaml").write_text(yaml.safe_dump(camera_info, sort_keys=False))
    description = {
        "name": "mentor3ad synthetic inspection cell",
        "layout": "MVTec 3D-AD (rgb/*.png, xyz/*.tiff float32 metres, invalid = 0, gt/*.png 0/255)",
        "resolution": [int(resolution[0]), int(resolution[1])],
        "seed": seed,
        "counts": counts,
        "defect_families": {d: DEFECT_FAMILY[d] for d in defect_types},
        "camera_matrix": K.tolist(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "generation_seconds": round(time.perf_counter() - start, 2),
    }
    (out / "dataset.json").write_text(json.dumps(description, indent=2))
    return description


def load_camera_matrix(path: Union[str, Path]) -> Optional[np.ndarray]:
    """(3, 3) K from a ``camera_info.yaml`` (ROS camera_calibration format), or from a dataset folder's
    ``camera_info.yaml``; None when the file does not exist, ConfigError when it has no valid K."""
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / "camera_info.yaml"
    if not path.is_file():
        return None
    try:
        info = yaml.safe_load(path.read_text())
        return np.asarray(info["camera_matrix"]["data"], dtype=np.float64).reshape(3, 3)
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: no valid camera_matrix (3x3): {exc}") from None
