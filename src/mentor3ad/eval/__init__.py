"""Measuring detectors: MVTec 3D-AD metrics (:mod:`.metrics`), reports (:mod:`.report`), tables
(:mod:`.tables`), pictures (:mod:`.visualize`: the one heat-map overlay, curves, gallery) and reference
detectors (:mod:`.baselines`)."""
