"""Configuration of a Mentor3AD detector: one dataclass tree, loadable from YAML / dict.

``Mentor3ADConfig`` = ``features`` (:class:`mentor3ad.features.FeatureConfig`, frozen backbones),
``model`` (:class:`ModelConfig`, MFM / MGM / Voting Module heads and ablation switches),
``train`` (:class:`TrainConfig`) and ``calibration`` (:class:`CalibrationConfig`).
Unknown keys are an error naming the key; ``to_dict`` / ``from_dict`` round-trip exactly.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

SCORE_MAP_NAMES = ("rgb", "xyz", "mtr")


@dataclass
class ModelConfig:
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
    """

    standardize_features: bool = True
    mentor_dim: int = 128
    mfm_hidden_dim: int = 512
    mfm_fusion: str = "concat"
    infonce_temperature: float = 0.1
    infonce_max_patches: int = 2048
    mfm_fused_contrast_weight: float = 1.0
    mgm_hidden_dim: int = 512
    mgm_mentor_dim: int = 128
    mgm_fusion: str = "concat"
    use_mentor: bool = True
    score_maps: List[str] = field(default_factory=lambda: list(SCORE_MAP_NAMES))
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
    smoothing_sigma: float = 4.0

    def validate(self) -> None:
        if self.mfm_fusion not in ("concat", "sum") or self.mgm_fusion not in ("concat", "sum"):
            raise ValueError(f"model.mfm_fusion / model.mgm_fusion must be 'concat' or 'sum', got "
                             f"{self.mfm_fusion!r} / {self.mgm_fusion!r}")
        if not self.score_maps:
            raise ValueError("model.score_maps must name at least one of rgb, xyz, mtr")
        for name in self.score_maps:
            if name not in SCORE_MAP_NAMES:
                raise ValueError(f"model.score_maps: unknown map {name!r} (allowed: {', '.join(SCORE_MAP_NAMES)})")
        if len(set(self.score_maps)) != len(self.score_maps):
            raise ValueError(f"model.score_maps has duplicates: {self.score_maps}")
        if self.ocsvm_kernel not in ("linear", "rff"):
            raise ValueError(f"model.ocsvm_kernel must be 'linear' or 'rff', got {self.ocsvm_kernel!r}")
        if not 0.0 < self.ocsvm_nu <= 1.0:
            raise ValueError(f"model.ocsvm_nu must be in (0, 1], got {self.ocsvm_nu}")
        if self.vote_levels < 1:
            raise ValueError(f"model.vote_levels must be >= 1, got {self.vote_levels}")
        if self.vote_kernel_size < 1 or self.vote_kernel_size % 2 == 0:
            raise ValueError(f"model.vote_kernel_size must be odd and positive, got {self.vote_kernel_size}")
        for key in ("mentor_dim", "mfm_hidden_dim", "mgm_hidden_dim", "mgm_mentor_dim", "vote_conv_channels",
                    "infonce_max_patches", "ocsvm_rff_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.infonce_temperature <= 0 or self.smoothing_sigma < 0 or self.score_eps <= 0:
            raise ValueError("model.infonce_temperature and model.score_eps must be > 0, "
                             "model.smoothing_sigma >= 0")

    @property
    def needs_mfm(self) -> bool:
        """The MFM is trained and used when the MGM gets the mentor or the mentor score map is used."""
        return self.use_mentor or "mtr" in self.score_maps


@dataclass
class TrainConfig:
    """Optimisation of the three stages (MFM -> MGM -> VM); all seeded.

    batch_size: samples (feature maps) per step in the MFM and MGM stages.
    vm_steps: full-batch Adam steps of the Voting Module + OC-SVM stage.
    vm_anchor_weight: L2 pull of the VM exponent logits / conv kernel logits to their initialisation
        (keeps the levels close to their initial meaning; the constrained parametrisation and the
        batch-statistics standardisation already rule out the collapse to constant maps).
    vm_data: score maps the VM is fitted on: "train" (the MGM training samples, as in the paper) or
        "validation" (held-out normal samples; falls back to train when none are given).
    deterministic: torch.use_deterministic_algorithms during training.
    """

    seed: int = 0
    batch_size: int = 4
    mfm_epochs: int = 20
    mfm_lr: float = 1e-3
    mgm_epochs: int = 40
    mgm_lr: float = 1e-3
    weight_decay: float = 0.0
    vm_steps: int = 500
    vm_lr: float = 1e-2
    vm_anchor_weight: float = 1.0
    vm_data: str = "train"
    deterministic: bool = True

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        for key in ("mfm_epochs", "mgm_epochs", "vm_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.vm_data not in ("train", "validation"):
            raise ValueError(f"train.vm_data must be 'train' or 'validation', got {self.vm_data!r}")


@dataclass
class CalibrationConfig:
    """Decision threshold.

    target_false_reject_rate: fraction of normal parts allowed to FAIL; threshold = the
        ceil((1 - rate) * n)-th smallest of n held-out normal image scores (the maximum when n < 1/rate).
    margin: relative margin added on top: threshold * (1 + margin).
    """

    target_false_reject_rate: float = 0.01
    margin: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.target_false_reject_rate < 1.0:
            raise ValueError(f"calibration.target_false_reject_rate must be in [0, 1), got "
                             f"{self.target_false_reject_rate}")


def _default_feature_config():
    from .features import FeatureConfig

    return FeatureConfig()


@dataclass
class Mentor3ADConfig:
    """The whole detector configuration (stored in every checkpoint)."""

    features: Any = field(default_factory=_default_feature_config)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def validate(self) -> "Mentor3ADConfig":
        self.model.validate()
        self.train.validate()
        self.calibration.validate()
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Mentor3ADConfig":
        from .features import FeatureConfig

        if not isinstance(data, dict):
            raise ValueError(f"config must be a mapping, got {type(data).__name__}")
        sections = {"features": FeatureConfig, "model": ModelConfig, "train": TrainConfig,
                    "calibration": CalibrationConfig}
        for key in data:
            if key not in sections:
                raise ValueError(f"unknown config key {key!r} (allowed: {', '.join(sections)})")
        built = {name: _dataclass_from_dict(kind, data.get(name) or {}, name) for name, kind in sections.items()}
        return cls(**built).validate()

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "Mentor3ADConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def copy(self) -> "Mentor3ADConfig":
        return Mentor3ADConfig.from_dict(self.to_dict())


def _dataclass_from_dict(kind, data: Dict[str, Any], prefix: str):
    """Build dataclass ``kind`` from ``data``; unknown keys raise ValueError naming ``prefix.key``."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix!r} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(kind)}
    hints = typing.get_type_hints(kind)
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"unknown config key {prefix}.{key} (allowed: {', '.join(known)})")
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _dataclass_from_dict(hint, value, f"{prefix}.{key}")
        elif isinstance(value, list) and typing.get_origin(hint) in (tuple, Tuple):
            value = tuple(value)
        kwargs[key] = value
    return kind(**kwargs)


def default_config_path() -> Path:
    """The packaged default ``config/model.yaml`` (source tree or installed share/ copy)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "config" / "model.yaml",
                  Path(sys.prefix) / "share" / "mentor3ad" / "config" / "model.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"default model config not found (looked in {', '.join(map(str, candidates))})")
