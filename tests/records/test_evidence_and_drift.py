"""Evidence retention on real files (age per verdict, size budget with FAIL kept longest) and the drift
estimate (good parts' expected false-reject rate now vs at calibration)."""
import math
import os
import time

import numpy as np

from record_helpers import part_result
from mentor3ad.records.drift import drift_estimate
from mentor3ad.records.evidence import Evidence, EvidenceStore, RetentionPolicy
from mentor3ad.records.models import ModelRecord


def _age(store, relative_paths, days):
    stamp = time.time() - days * 86400
    for relative in relative_paths:
        os.utime(store.root / relative, (stamp, stamp))


def test_retention_by_age_then_by_size_keeps_fail_evidence_longest(tmp_path):
    store = EvidenceStore(tmp_path / "evidence", RetentionPolicy(max_bytes=10 ** 9))
    written = {}
    for index, name in ((0, "old_pass"), (1, "new_pass"), (4, "old_fail"), (9, "new_fail")):
        rgb, result = part_result(index)
        written[name] = store.write(f"uid{index}", str(result.verdict), time.time_ns(), result, Evidence(rgb=rgb))
    assert set(written["old_fail"]) == {"thumbnail", "image", "overlay"} and set(written["new_pass"]) == {"thumbnail"}
    _age(store, written["old_pass"].values(), 8)  # older than PASS's 7 days
    _age(store, written["old_fail"].values(), 30)  # within FAIL's 365 days
    report = store.enforce()
    assert report["removed_files"] == 1 and not (store.root / written["old_pass"]["thumbnail"]).exists()
    assert all((store.root / p).exists() for p in written["old_fail"].values())

    # over the budget: PASS files go first, then the oldest FAIL files, down to 90 % of the budget
    sizes = {name: sum((store.root / p).stat().st_size for p in written[name].values()) for name in ("old_fail", "new_fail")}
    store.policy.max_bytes = sizes["new_fail"] + sizes["old_fail"] // 2
    store.enforce()
    assert not (store.root / written["new_pass"]["thumbnail"]).exists()
    assert all((store.root / p).exists() for p in written["new_fail"].values())
    assert store.total_bytes <= store.policy.max_bytes
    left = [p for p in written["old_fail"].values() if (store.root / p).exists()]
    assert len(left) < 3  # the older FAIL part lost files before the newer one lost any


def test_evidence_keeps_the_raw_map_when_asked(tmp_path):
    store = EvidenceStore(tmp_path, RetentionPolicy(keep_raw_maps=True, thumbnails=False))
    rgb, result = part_result(4)
    files = store.write("u", "FAIL", time.time_ns(), result, Evidence(rgb=rgb))
    assert set(files) == {"image", "overlay", "raw_map"}
    assert np.array_equal(np.load(tmp_path / files["raw_map"]), result.anomaly_map)


def test_drift_estimate_compares_recent_good_parts_with_calibration():
    rng = np.random.default_rng(0)
    calibration = list(np.exp(rng.normal(0.0, 0.1, 40)))
    threshold = float(np.exp(0.0 + 2.6 * 0.1))  # about a 0.5 % tail
    model = ModelRecord("m", threshold, 0.01, "tail", calibration, math.nan)
    steady = drift_estimate("m", np.exp(rng.normal(0.0, 0.1, 200)), threshold, model)
    assert steady.status == "ok" and steady.expected_now < 0.02 and 0 < steady.expected_at_calibration < 0.02
    crept = drift_estimate("m", np.exp(rng.normal(0.15, 0.1, 200)), threshold, model)  # scores creep up
    assert crept.status == "warn" and crept.expected_now > 2 * 0.01 and "more than 2x the target" in crept.message
    assert crept.low <= crept.expected_now <= crept.high
    few = drift_estimate("m", calibration[:5], threshold, model)
    assert few.status == "unknown" and "at least 20" in few.message
    unregistered = drift_estimate("m", calibration * 2, threshold, None)
    assert unregistered.status == "unknown" and "record add-model" in unregistered.message
    # the target comes from the model; without one the rate at calibration is the reference
    no_target = drift_estimate("m", np.exp(rng.normal(0.15, 0.1, 200)), threshold,
                               ModelRecord("m", threshold, math.nan, "", calibration))
    assert no_target.status == "warn" and no_target.reference == no_target.expected_at_calibration
