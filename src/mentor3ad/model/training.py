"""Training of the Mentor3AD heads on normal samples: MFM -> MGM -> Voting Module, then calibration.

Everything is seeded; on CPU the run is deterministic (``torch.use_deterministic_algorithms``), so the
same features, config and seed give bit-identical weights. Features come from the
:class:`mentor3ad.features.cache.FeatureCache` when a cache directory is given, so a second run skips the
backbones.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch

from ..backbones import resolve_precision
from ..config import Mentor3ADConfig
from ..errors import InputError
from ..features.extractor import FeatureSet, stack_features
from .head_losses import mentor_table, mfm_loss, mgm_loss, table_rows, valid_patches
from .heads import Mentor3ADHeads
from .voting import fit_voting
from .input_profile import PROFILE_KEY, InputProfile

LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the block (restored afterwards)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _batches(count: int, batch_size: int, generator: torch.Generator, limit: int = 0,
             patch_counts: Optional[torch.Tensor] = None, patch_limit: int = 0) -> List[torch.Tensor]:
    """One epoch's batches of sample indices: a random order of the ``count`` samples, cut to the first
    ``limit`` (0: all; ``train.samples_per_epoch``, a fresh random subset every epoch) and after the sample
    whose valid patches (``patch_counts`` (count,)) bring the total to ``patch_limit`` (0: no bound;
    ``train.patches_per_epoch``)."""
    order = torch.randperm(count, generator=generator)
    if 0 < limit < count:
        order = order[:limit]
    if patch_limit > 0 and patch_counts is not None:
        below = int((torch.cumsum(patch_counts[order], 0) < patch_limit).sum())
        order = order[:below + 1]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _run_epochs(name: str, parameters, loss_fn, features: FeatureSet, epochs: int, lr: float, weight_decay: float,
                batch_size: int, generator: torch.Generator, progress: bool, log: Callable[[str], None],
                samples_per_epoch: int = 0, patches_per_epoch: int = 0, average_last: float = 0.0) -> List[float]:
    """Adam over ``epochs`` epochs of ``loss_fn(batch FeatureSet, its sample indices (B,) int64)``; returns the
    mean loss per epoch. ``average_last`` > 0: the parameters end as the equal-weight mean of their values at
    the end of each of the last ceil(average_last x epochs) epochs (stochastic weight averaging at the constant
    learning rate), not the last epoch's values."""
    from tqdm import tqdm

    parameters = [p for p in parameters if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    history = []
    averaged_epochs = min(epochs, math.ceil(round(average_last * epochs, 9))) if average_last > 0 else 0  # 0.28 x 25: 7
    average: Optional[List[torch.Tensor]] = None
    averaged = 0
    patch_counts = features.valid.flatten(1).sum(1)
    bar = tqdm(range(epochs), desc=name, disable=not progress, leave=False)
    for epoch in bar:
        total, steps = 0.0, 0
        for index in _batches(len(features), batch_size, generator, samples_per_epoch, patch_counts,
                              patches_per_epoch):
            loss = loss_fn(features.subset(index), index)
            if loss is None:
                continue
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            steps += 1
        mean = total / max(steps, 1)
        history.append(mean)
        bar.set_postfix(loss=f"{mean:.4f}")
        if epoch == 0 or epoch == epochs - 1 or (epoch + 1) % max(1, epochs // 5) == 0:
            log(f"{name} epoch {epoch + 1}/{epochs} loss {mean:.5f}")
        if epoch >= epochs - averaged_epochs:
            with torch.no_grad():
                if average is None:
                    average = [p.detach().clone() for p in parameters]
                else:
                    for mean_value, p in zip(average, parameters):
                        mean_value.add_(p.detach() - mean_value, alpha=1.0 / (averaged + 1))
            averaged += 1
    if average is not None and averaged > 1:
        with torch.no_grad():
            for mean_value, p in zip(average, parameters):
                p.copy_(mean_value)
        log(f"{name}: parameters averaged over the last {averaged} epochs")
    return history


@torch.no_grad()
def compute_score_maps(heads: Mentor3ADHeads, features: FeatureSet, device, batch_size: int = 8) -> torch.Tensor:
    """Stacked float32 score maps (M, num_maps, R, R) of frozen MFM + MGM on ``features``, in the heads'
    precision (as inference computes them)."""
    out = []
    for start in range(0, len(features), batch_size):
        batch = features.subset(slice(start, start + batch_size)).to(device)
        out.append(heads.stacked(heads.score_maps(batch.rgb, batch.xyz, batch.valid)).cpu())
    return torch.cat(out)


def _at_most(features: FeatureSet, count: int, seed: int) -> FeatureSet:
    """A seeded random subset of ``count`` samples, in their order (0 or at least as many: all of them)."""
    if count <= 0 or len(features) <= count:
        return features
    chosen = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:count]
    return features.subset(chosen.sort().values)


def train_heads(train: FeatureSet, config: Mentor3ADConfig, vm_features: Optional[FeatureSet] = None,
                device="cpu", progress: bool = True, log: Callable[[str], None] = LOG.info):
    """Train MFM -> MGM -> VM on normal features. Returns (heads in eval mode, info dict).

    The MFM / MGM losses and the score maps the VM is fitted on are computed in ``model.head_precision``
    resolved for ``device`` (recorded as info["head_precision"]); the VM, OC-SVM and statistics in float32."""
    model_config, train_config = config.model, config.train
    if len(train) == 0:
        raise InputError("no training features")
    if int(train.valid.sum()) == 0:
        raise InputError("the training samples contain no valid patch (empty point clouds?)")
    precision = resolve_precision(model_config.head_precision, torch.device(device))
    info: Dict[str, object] = {"num_train_samples": len(train), "seed": train_config.seed, "head_precision": precision}
    started = time.perf_counter()
    with deterministic(train_config.deterministic):
        torch.manual_seed(train_config.seed)
        heads = Mentor3ADHeads(train.rgb.shape[1], train.xyz.shape[1], model_config, seed=train_config.seed)
        heads.to(device).train()
        heads.precision = precision
        statistics = valid_patches(train, device)
        heads.set_feature_statistics(statistics["rgb"], statistics["xyz"])
        del statistics
        generator = torch.Generator().manual_seed(train_config.seed)
        if heads.mfm is not None:
            info["mfm_loss"] = _run_epochs(
                "MFM", heads.mfm.parameters(), lambda b, index: mfm_loss(heads, b, generator, device), train,
                train_config.mfm_epochs, train_config.mfm_lr, train_config.weight_decay, train_config.batch_size,
                generator, progress, log, train_config.samples_per_epoch, train_config.patches_per_epoch,
                train_config.average_last)
            heads.mfm.requires_grad_(False)
            heads.mfm.eval()
        mentor, starts = mentor_table(heads, train, device, train_config.batch_size) if model_config.use_mentor \
            else (None, None)
        info["mgm_loss"] = _run_epochs(
            "MGM", heads.mgm.parameters(),
            lambda b, index: mgm_loss(heads, b, device, None if mentor is None else mentor[table_rows(starts, index)]),
            train, train_config.mgm_epochs,
            train_config.mgm_lr, train_config.weight_decay, train_config.batch_size, generator, progress, log,
            train_config.samples_per_epoch, train_config.patches_per_epoch, train_config.average_last)
        mentor = None  # its memory back before the VM
        heads.mgm.requires_grad_(False)
        heads.eval()
        if heads.voting is not None:
            source = train
            if train_config.vm_data == "validation":
                if vm_features is not None and len(vm_features) > 0:
                    source = vm_features
                else:
                    log("train.vm_data=validation but no validation samples: fitting the VM on the training maps")
            chosen = _at_most(source, train_config.vm_max_samples, train_config.seed)
            if len(chosen) < len(source):
                log(f"VM: fitted on the score maps of {len(chosen)} of the {len(source)} samples (train.vm_max_samples)")
            source = chosen
            maps = compute_score_maps(heads, source, device)
            info["vm_loss"] = fit_voting(heads.voting, maps.to(device), source.valid.to(device), train_config.vm_steps,
                                         train_config.vm_lr, train_config.vm_anchor_weight, progress, log)
            info["vm_samples"] = len(source)
        heads.requires_grad_(False)
        heads.eval()
    info["train_seconds"] = round(time.perf_counter() - started, 3)
    for key in ("mfm_loss", "mgm_loss", "vm_loss"):  # keep the checkpoint metadata small
        if key in info and info[key]:
            info[f"{key}_final"] = info[key][-1]
            info[key] = [round(v, 6) for v in info[key][:: max(1, len(info[key]) // 20)]]
    return heads, info


def train_detector(train_samples: Sequence, config: Optional[Mentor3ADConfig] = None, val_samples=None,
                   cache_dir=None, device="cpu", progress: bool = True, log: Optional[Callable[[str], None]] = None,
                   extractor=None):
    """Train a :class:`mentor3ad.model.detector.Detector` on normal ``train_samples`` (list of Sample).

    val_samples: held-out normal samples for threshold calibration (and the VM when train.vm_data is
    "validation"); without them the threshold is calibrated on the training scores (optimistic, logged).
    extractor: an existing FeatureExtractor built from config.features (else one is created, with the options
    left to training, e.g. ``fill_dropouts: auto``, decided from ``train_samples``: the model stores the decision).
    """
    from ..features.cache import extract_features
    from ..features.extractor import cluster_filter_note
    from ..io.datasets.views import augmentation_for, training_views
    from .detector import Detector

    log = log or LOG.info
    config = config or Mentor3ADConfig()
    if not train_samples:
        raise InputError("train_detector: no training samples")
    for sample in list(train_samples) + list(val_samples or []):
        if sample.label not in (None, 0):
            raise InputError(f"train_detector: sample {sample.name!r} is labelled anomalous; train and calibrate "
                             "on good parts only")
    parts, settled = list(train_samples), ""  # settled: why training decided an option (fill_dropouts: auto)
    if extractor is None:
        from ..features.extractor import FeatureExtractor, settle_auto_options

        config, settled = settle_auto_options(config, parts, device)
        if settled:
            log(settled)
        extractor = FeatureExtractor(config.features, device)
    augmentation = augmentation_for(config.train.view_augmentation, len(parts), config.train.augment_below)
    train_views = training_views(parts, augmentation)
    if augmentation != "none":
        why = (f"fewer than train.augment_below={config.train.augment_below}"
               if config.train.view_augmentation == "auto" else f"train.view_augmentation={augmentation}")
        log(f"{len(parts)} training parts ({why}): training on each and its 3 quarter turns ({len(train_views)} views)")
    log(f"extracting features of {len(train_views)} training samples")
    train = stack_features(extract_features(train_views, extractor, cache_dir, progress=progress,
                                            desc="train features"))
    note = cluster_filter_note(extractor, parts)
    if note:
        log(note)
    validation = None
    if val_samples:
        validation = stack_features(extract_features(val_samples, extractor, cache_dir, progress=progress,
                                                     desc="validation features"))
    heads, info = train_heads(train, config, validation, device, progress, log)
    info["weights_sources"] = dict(getattr(extractor, "weights_sources", {}))
    if settled:
        info["settled_options"] = settled  # why the model holds the option it does
    info["num_train_samples"] = len(parts)  # parts, as given; their views in view_augmentation
    info["view_augmentation"] = {"mode": augmentation, "parts": len(parts), "views": len(train_views)}
    # the inputs' checks know the parts as the camera gives them (a quarter turn of a 4:3 image is 3:4)
    info[PROFILE_KEY] = InputProfile.of(parts + list(val_samples or [])).to_dict()
    detector = Detector(config, heads, extractor, threshold=float("inf"), training_info=info, device=device)
    calibrate_detector(detector, train, [s.rgb.shape[:2] for s in train_views], validation,
                       [s.rgb.shape[:2] for s in val_samples or []], device, log, val_samples,
                       views_per_part=len(train_views) // len(parts))
    return detector


def cross_validated_parts(train: FeatureSet, sizes: Sequence, config: Mentor3ADConfig, device,
                          log: Callable[[str], None], views_per_part: int = 1):
    """Maps (:class:`~mentor3ad.model.scoring.ScoredParts`, each map relative to its whole part level) of
    every training part by heads trained without it (``calibration.cv_folds`` folds), scored as inference
    scores them (:func:`mentor3ad.model.scoring.score_feature_set`). With
    ``views_per_part`` > 1 the samples are parts' views in groups (the part as given first): a part's views
    are held out together and the part as given is scored."""
    from .scoring import PostProcessing, ScoredParts, score_feature_set

    folds = config.calibration.cv_folds
    parts = len(train) // views_per_part
    order = torch.randperm(parts, generator=torch.Generator().manual_seed(config.train.seed)).tolist()
    scored = ScoredParts()
    for fold in range(folds):
        held_parts = set(order[fold::folds])
        held = [p * views_per_part for p in order if p in held_parts]
        kept = [p * views_per_part + v for p in order if p not in held_parts for v in range(views_per_part)]
        log(f"calibration: cross-validation fold {fold + 1}/{folds} ({len(kept)} training, {len(held)} scored)")
        heads, _ = train_heads(train.subset(kept), config, None, device, progress=False, log=lambda message: None)
        scored.extend(score_feature_set(lambda batch: heads.final_maps(batch.rgb, batch.xyz, batch.valid),
                                        train.subset(held), [sizes[i] for i in held], PostProcessing.of(config),
                                        batch_size=8))
    return scored


def calibrate_detector(detector, train: FeatureSet, train_sizes: Sequence, validation: Optional[FeatureSet],
                       val_sizes: Sequence, device="cpu", log: Callable[[str], None] = LOG.info, val_samples=None,
                       views_per_part: int = 1):
    """Set the threshold from held-out good scores (and cross-validated training scores when
    ``calibration.cv_folds``; the training scores, optimistic, when there are neither), scored at the input
    resolution as inference scores them; returns the :class:`~mentor3ad.model.threshold.ThresholdRecord`
    the detector now carries (rule, sources, expected false-reject rate, scores, and the pseudo-defect escape
    rate with its alternatives from pseudo-defects of ``val_samples``, the held-out good Samples).
    ``views_per_part``: the training samples are parts' views in groups (train.view_augmentation)."""
    from . import escape
    from .image_score import choose_image_score
    from .rgb_bank import choose_rgb_bank
    from .scoring import ScoredParts
    from .threshold import ThresholdSource, from_good_scores

    calibration = detector.config.calibration
    detector.set_level_cap(None)  # the calibration parts' maps relative to their whole level; the cap below
    scored, sources = ScoredParts(), []
    if validation is not None and len(validation):
        scored.extend(detector.score_features(validation, val_sizes, batch_size=8))
        sources.append(ThresholdSource("validation", len(validation)))
    if calibration.cv_folds:
        cv_scored = cross_validated_parts(train, train_sizes, detector.config, device, log, views_per_part)
        scored.extend(cv_scored)
        sources.append(ThresholdSource("cv", len(cv_scored)))
    if not len(scored):
        log("no held-out good parts: calibrating the threshold on the training scores (optimistic)")
        scored = detector.score_features(train, train_sizes, batch_size=8)
        sources.append(ThresholdSource("train", len(train)))
    with tempfile.TemporaryDirectory(prefix="mentor3ad-pseudo-defects-") as cache_dir:  # extracted once
        scores, defect_scores, seconds = choose_image_score(detector, scored, val_samples, log, cache_dir)  # + the cap
        kept = choose_rgb_bank(detector, train, validation, val_sizes, val_samples, scores, log, cache_dir, defect_scores)
    if kept is not None:  # the fused score is the model's: its threshold and pseudo-defect scores
        scores, defect_scores, seconds = kept
    record = from_good_scores(scores, calibration, sources, set_by="train")
    if val_samples:
        record = escape.estimate(record, detector, val_samples, calibration, detector.config.train.seed, log,
                                 defect_scores, seconds)
    else:
        log("pseudo-defect escape rate: skipped (no held-out good parts to seed pseudo-defects on; train with "
            "held-out good parts for it)")
    detector.set_threshold(record)
    if record.outliers:
        log(f"check the calibration parts scoring {', '.join(f'{s:.4g}' for s in record.outliers)} of {len(scores)}: "
            f"they score far above the other good parts and raise the threshold; a defective part among them "
            f"would let similar defects PASS")
    rate = record.expected_false_reject_rate
    interval = "n/a" if rate.get("low") is None else f"{rate['low']:.3%} - {rate['high']:.3%}"
    log(f"threshold {record.describe()}; expected false-reject rate {rate['expected']:.3%} (5-95 %: {interval}), "
        f"{rate['empirical']:.1%} of the calibration parts")
    log(escape.summary(record))
    for line in escape.table(record):
        log(line)
    return record
