"""Filling an inspection record with the results of a synthetic run (real images, anomaly maps with a
defect blob where the part has one, the package's own decide()) for the record and dashboard tests."""
from __future__ import annotations

import numpy as np

from helpers import synthetic_sample

THRESHOLD = 1.0
MODEL_ID = "0123456789ab"


def part_result(index: int, size: int = 96, threshold: float = THRESHOLD, model_id: str = MODEL_ID):
    """(rgb, InspectionResult) of part ``index``: every 5th part has a stain (a FAIL), the others are good."""
    from mentor3ad.model.postprocess import decide

    defect = "stain" if index % 5 == 4 else "good"
    sample = synthetic_sample(index, size=size, defect=defect)
    rng = np.random.default_rng(index)
    v, u = np.mgrid[0:size, 0:size]
    amap = (0.35 + 0.25 * rng.random() + 0.05 * rng.random((size, size))).astype(np.float32)
    if defect != "good":
        cy, cx = np.argwhere(sample.mask).mean(axis=0)
        amap += (1.2 * np.exp(-((v - cy) ** 2 + (u - cx) ** 2) / 30.0)).astype(np.float32)
    result = decide(amap, threshold, sample.xyz, model_id).replace(latency_ms=40.0 + index % 7, stamp_ns=index * 10**8,
                                                                  frame_id="camera")
    return sample.rgb, result


def calibration_scores(count: int = 20):
    """Image scores of good parts as part_result makes them (what the threshold was calibrated on)."""
    rng = [np.random.default_rng(1000 + i) for i in range(count)]
    return [float(0.35 + 0.25 * r.random() + 0.05) for r in rng]


def fill_record(writer, count: int, start: int = 0, part_types=("gland", "flange")) -> None:
    """Submit ``count`` synthetic parts (ids P-00000 ...) with their images to a RecordWriter."""
    from mentor3ad.records import Evidence

    for index in range(start, start + count):
        rgb, result = part_result(index)
        writer.submit(result, Evidence(rgb=rgb), part_id=f"P-{index:05d}", part_type=part_types[index % len(part_types)])
