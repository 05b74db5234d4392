"""The trained part of Mentor3AD: heads (:mod:`.heads`, :mod:`.voting`), training (:mod:`.training`),
threshold calibration (:mod:`.calibration`), post-processing and the verdict (:mod:`.postprocess`), the
inference API (:mod:`.detector`) and the model file (:mod:`.checkpoint`)."""
