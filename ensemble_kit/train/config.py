"""Typed, frozen training configuration; YAML only at the edges (load/save)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ensemble_kit._config import build_dataclass, set_dotted
from ensemble_kit.errors import ValidationError
from ensemble_kit.store._files import write_text


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser (any name timm's ``create_optimizer_v2`` knows: adamw, sgd, lamb, ...)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    clip_grad_norm: Optional[float] = None
    accumulation_steps: int = 1


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped every optimiser step: linear warmup, then ``name``."""

    name: Literal["cosine", "onecycle", "cosine_restarts", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    restart_epochs: int = 10
    restart_mult: int = 1


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. ``policy`` names a registered torchvision auto-augment policy
    (``AUGMENT_POLICIES``: trivial, randaugment, autoaugment); ``albumentations`` a registered
    pipeline (``ALBUMENTATIONS``; ``"aoi"``: the AOI champion's set)."""

    policy: Optional[str] = None
    randaugment_n: int = 2
    randaugment_m: int = 9
    albumentations: Optional[str] = None
    random_resized_crop: bool = True
    crop_scale_min: float = 0.5
    hflip: float = 0.5
    vflip: float = 0.0
    random_erasing: float = 0.0
    repeated_augment: int = 1
    test_img_size: Optional[int] = None


@dataclass(frozen=True)
class RegularizationConfig:
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    ema_decay: Optional[float] = None
    early_stopping_patience: Optional[int] = None


@dataclass(frozen=True)
class TTAConfig:
    """Test-time augmentation views, averaged in logit space."""

    views: tuple[str, ...] = ("identity",)
    keep_views: bool = False


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: the loss is ``(1 - alpha) * hard + alpha * T**2 * KL(teacher || student)``,
    both distributions softened by ``temperature`` (Hinton et al., 2015). The teachers' soft
    targets come to :func:`~ensemble_kit.train.train_cv` per fold (``soft_targets=``)."""

    alpha: float = 0.5
    temperature: float = 2.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines how one base model is trained, fold by fold.

    Examples
    --------
    >>> cfg = TrainConfig(model="resnet10t", img_size=32, epochs=2)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.with_overrides(["optimizer.lr=0.1", "epochs=5"]).optimizer.lr
    0.1
    """

    model: str = "resnet10t"
    img_size: int = 224
    epochs: int = 20
    batch_size: int = 32
    loss: str = "ce"
    focal_gamma: float = 2.0
    bi_tempered_t1: float = 0.8
    bi_tempered_t2: float = 1.2
    class_weights: Optional[Literal["balanced"]] = None
    balanced_sampler: bool = False
    pooling: Literal["default", "gem"] = "default"
    pretrained: bool = False
    pretrained_path: Optional[str] = None
    model_kwargs: Optional[dict[str, Any]] = None
    normalize: Literal["imagenet", "dataset"] = "imagenet"
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    cpu_threads: Optional[int] = None
    seed: int = 0
    keep_checkpoints: int = 2
    log: Optional[Literal["tensorboard"]] = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    distill: Optional[DistillConfig] = None

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tta"]["views"] = list(self.tta.views)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys and wrong types are errors naming the key."""
        return build_dataclass(cls, data, prefix="")

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValidationError(f"{str(path)!r}: a training config must be a YAML mapping.")
        return cls.from_dict(data)

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` overrides (dotted keys for nested sections; values parsed as YAML)."""
        data = self.to_dict()
        for assignment in assignments:
            set_dotted(data, assignment)
        return TrainConfig.from_dict(data)


def _check_range(key: str, value: float | None, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """``value`` must be finite and within the bounds (open or closed); ``None`` passes."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        bounds = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ValidationError(f"Config key {key!r} must be a finite number {bounds}; got {value!r}.")


#: ``model_kwargs`` keys refused, with the reason and the fix: arguments that timm's factory,
#: :func:`~ensemble_kit.train.models.build_model` or another config key own, and every argument
#: that makes timm read a file, fetch a URL or build something other than a classifier. A saved
#: config travels inside exported fold models and bundles, so these must never reach timm.
_OWNED_MODEL_KWARGS: dict[str, str] = {
    "num_classes": "the number of classes comes from the store's classes",
    "pretrained": "use the config key 'pretrained'",
    "img_size": "use the config key 'img_size'",
    "drop_rate": "use the config key 'regularization.drop_rate'",
    "drop_path_rate": "use the config key 'regularization.drop_path_rate'",
    "in_chans": "images are always decoded to 3-channel RGB",
    "checkpoint_path": "it makes timm read a file; load local weights with the config key 'pretrained_path'",
    "pretrained_cfg": "it names weight files or URLs; load local weights with the config key 'pretrained_path'",
    "pretrained_cfg_overlay": "it names weight files or URLs; load local weights with the config key "
                              "'pretrained_path'",
    "pretrained_model_args": "it is timm's record of a checkpoint's source, not an architecture argument",
    "pretrained_strict": "it configures timm's weight loading; use the config key 'pretrained_path'",
    "pretrained_filter_fn": "it configures timm's weight loading; use the config key 'pretrained_path'",
    "cache_dir": "it names a download folder; ensemble_kit never downloads while building a model",
    "pruned": "it makes timm read a pruned-architecture file",
    "features_only": "ensemble_kit builds classifiers, not feature extractors",
    "feature_cfg": "ensemble_kit builds classifiers, not feature extractors",
    "feature_cls": "ensemble_kit builds classifiers, not feature extractors",
    "out_indices": "ensemble_kit builds classifiers, not feature extractors",
    "model_cfg": "it replaces the architecture's definition; pick another 'model' instead",
    "kwargs_filter": "it is an option of timm's factory, not an architecture argument",
    "scriptable": "it is an option of timm's factory, not an architecture argument",
    "exportable": "it is an option of timm's factory, not an architecture argument",
    "no_jit": "it is an option of timm's factory, not an architecture argument",
    "device": "the trainer places the model; use the config key 'device'",
    "dtype": "the trainer sets the precision; use the config key 'amp'",
}
# A string argument is a word (an activation, a norm layer, a pooling type: 'gelu', 'avg', or ''
# for none): no path separator, dot, colon or space, so no value can name a file or a URL timm
# might open.
_WORD_RE = re.compile(r"[A-Za-z0-9_-]{0,64}")
_MODEL_KWARGS_RULE = ("model_kwargs holds plain architecture arguments of the timm model (e.g. {patch_size: 4, "
                      "depth: 6}): numbers, true/false, null, words such as 'gelu', and flat lists of those")


def check_model_kwargs(model_kwargs: Mapping[str, Any] | None, *, pooling: str = "default",
                       key: str = "model_kwargs") -> None:
    """Refuse every ``model_kwargs`` entry that is not a plain architecture argument.

    ``model_kwargs`` come from a YAML file or from the ``model.json`` of an exported fold model
    (possibly received from elsewhere) and go to ``timm.create_model``, whose factory also
    takes arguments that read files (``checkpoint_path``, ``pretrained_cfg``), download
    (``pretrained``) or clash with what :func:`~ensemble_kit.train.models.build_model` sets
    (``num_classes``, ``drop_rate``). Only identifier keys not in the refused list are
    accepted, with values that are ints, finite floats, booleans, ``None``, words (letters,
    digits, ``_`` and ``-``: never a path or URL) or flat lists of those.

    Parameters
    ----------
    model_kwargs : mapping or None
    pooling : {"default", "gem"}
        The config's ``pooling``: with ``"gem"`` the head is replaced, so ``global_pool`` would
        be ignored and is refused.
    key : str
        The config key named in errors.

    Raises
    ------
    ValidationError
        Naming the first offending key, why it is refused and what to use instead.

    Examples
    --------
    >>> check_model_kwargs({"patch_size": 4, "depths": [2, 2], "act_layer": "gelu"})
    >>> check_model_kwargs({"checkpoint_path": "/tmp/w.pth"})
    Traceback (most recent call last):
    ...
    ensemble_kit.errors.ValidationError: Config key 'model_kwargs.checkpoint_path' is not accepted: ...
    """
    if model_kwargs is None:
        return
    if not isinstance(model_kwargs, Mapping):
        raise ValidationError(f"Config key {key!r} must be a mapping of architecture arguments or null; got "
                              f"{type(model_kwargs).__name__} {model_kwargs!r}. {_MODEL_KWARGS_RULE}.")
    for name, value in model_kwargs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValidationError(f"Config key {key!r}: {name!r} is not a keyword argument name. {_MODEL_KWARGS_RULE}.")
        where = f"{key}.{name}"
        if name in _OWNED_MODEL_KWARGS:
            raise ValidationError(f"Config key {where!r} is not accepted: {_OWNED_MODEL_KWARGS[name]}. Remove it. "
                                  f"{_MODEL_KWARGS_RULE}, never the keys timm's factory or ensemble_kit own, or that "
                                  f"read files: {sorted(_OWNED_MODEL_KWARGS)}.")
        if name == "global_pool" and pooling == "gem":
            raise ValidationError(f"Config key {where!r} would be ignored: pooling 'gem' replaces the model's "
                                  "pooling and head. Remove it, or set pooling: default.")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            problem = _model_kwarg_problem(item)
            if problem:
                raise ValidationError(f"Config key {where!r} is not accepted: {problem}; got {value!r}. "
                                      f"{_MODEL_KWARGS_RULE}.")


def _model_kwarg_problem(item: Any) -> str | None:
    """Why one value (or list item) of ``model_kwargs`` is refused, or ``None`` when it is plain."""
    if item is None or isinstance(item, (bool, int)):
        return None
    if isinstance(item, float):
        return None if math.isfinite(item) else "numbers must be finite"
    if isinstance(item, str):
        return None if _WORD_RE.fullmatch(item) else \
            "a string must be a word (letters, digits, '_', '-'), never a path, file name or URL"
    if isinstance(item, (list, tuple)):
        return "lists must be flat (no list inside a list)"
    return f"a {type(item).__name__} is not a plain architecture argument"


def _validate(cfg: TrainConfig) -> None:
    opt, sched, aug, reg = cfg.optimizer, cfg.schedule, cfg.augment, cfg.regularization
    check_model_kwargs(cfg.model_kwargs, pooling=cfg.pooling)
    for key, value in (("img_size", cfg.img_size), ("epochs", cfg.epochs), ("batch_size", cfg.batch_size),
                       ("keep_checkpoints", cfg.keep_checkpoints), ("optimizer.accumulation_steps", opt.accumulation_steps),
                       ("augment.repeated_augment", aug.repeated_augment), ("schedule.restart_epochs", sched.restart_epochs),
                       ("schedule.restart_mult", sched.restart_mult), ("augment.test_img_size", aug.test_img_size),
                       ("regularization.early_stopping_patience", reg.early_stopping_patience),
                       ("cpu_threads", cfg.cpu_threads)):
        _check_range(key, value, low=1)
    for key, value in (("num_workers", cfg.num_workers), ("seed", cfg.seed), ("augment.randaugment_n", aug.randaugment_n),
                       ("focal_gamma", cfg.focal_gamma), ("optimizer.weight_decay", opt.weight_decay),
                       ("schedule.min_lr", sched.min_lr), ("schedule.warmup_epochs", sched.warmup_epochs),
                       ("regularization.mixup_alpha", reg.mixup_alpha), ("regularization.cutmix_alpha", reg.cutmix_alpha)):
        _check_range(key, value, low=0)
    for key, value in (("optimizer.lr", opt.lr), ("optimizer.clip_grad_norm", opt.clip_grad_norm),
                       ("schedule.warmup_lr", sched.warmup_lr)):
        _check_range(key, value, low=0, low_open=True)
    for key, value in (("augment.hflip", aug.hflip), ("augment.vflip", aug.vflip),
                       ("augment.random_erasing", aug.random_erasing), ("regularization.mix_prob", reg.mix_prob),
                       ("regularization.switch_prob", reg.switch_prob)):
        _check_range(key, value, low=0, high=1)
    for key, value in (("regularization.label_smoothing", reg.label_smoothing), ("regularization.drop_rate", reg.drop_rate),
                       ("regularization.drop_path_rate", reg.drop_path_rate), ("optimizer.momentum", opt.momentum)):
        _check_range(key, value, low=0, high=1, high_open=True)
    _check_range("augment.crop_scale_min", aug.crop_scale_min, low=0, high=1, low_open=True)
    _check_range("augment.randaugment_m", aug.randaugment_m, low=0, high=30)
    _check_range("regularization.ema_decay", reg.ema_decay, low=0, high=1, low_open=True, high_open=True)
    _check_range("bi_tempered_t1", cfg.bi_tempered_t1, low=0, high=1, low_open=True)
    _check_range("bi_tempered_t2", cfg.bi_tempered_t2, low=1)
    if sched.warmup_epochs > cfg.epochs:
        raise ValidationError(f"Config key 'schedule.warmup_epochs' ({sched.warmup_epochs:g}) is larger than 'epochs' "
                              f"({cfg.epochs}): the learning rate would never leave its warmup.")
    if cfg.distill is not None:
        _check_range("distill.alpha", cfg.distill.alpha, low=0, high=1)
        _check_range("distill.temperature", cfg.distill.temperature, low=0, low_open=True)
        if reg.mixup_alpha > 0 or reg.cutmix_alpha > 0:
            raise ValidationError("distill cannot be combined with mixup/cutmix (the teachers' soft targets would "
                                  "have to be mixed with the images); set regularization.mixup_alpha and "
                                  "cutmix_alpha to 0.")
    if (reg.mixup_alpha > 0 or reg.cutmix_alpha > 0) and cfg.batch_size % 2:
        raise ValidationError("mixup/cutmix need an even batch_size (timm Mixup pairs samples).")
    from ensemble_kit.data.transforms import ALBUMENTATIONS, AUGMENT_POLICIES
    from ensemble_kit.train.losses import LOSSES
    from ensemble_kit.train.tta import check_views

    LOSSES.check(cfg.loss, key="loss")
    if aug.policy is not None:
        AUGMENT_POLICIES.check(aug.policy, key="augment.policy")
    if aug.albumentations is not None:
        ALBUMENTATIONS.check(aug.albumentations, key="augment.albumentations")
    check_views(cfg.tta.views)


@dataclass(frozen=True)
class MAEConfig:
    """How an MAE pre-training run is set up (typed, frozen; YAML only at the edge).

    ``model``, ``img_size`` and ``model_kwargs`` must be the fine-tune's (``TrainConfig``'s),
    so the encoder's weights fit the classifier built from them.
    """

    model: str = "vit_tiny_patch16_224"
    img_size: int = 224
    model_kwargs: Optional[dict[str, Any]] = None
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    crop_scale_min: float = 0.2
    hflip: float = 0.5
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    cpu_threads: Optional[int] = None
    seed: int = 0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        check_model_kwargs(self.model_kwargs)
        for key in ("img_size", "decoder_dim", "decoder_depth", "decoder_heads", "epochs", "batch_size",
                    "keep_checkpoints", "cpu_threads"):
            _check_range(key, getattr(self, key), low=1)
        for key in ("weight_decay", "warmup_epochs", "min_lr", "num_workers", "seed"):
            _check_range(key, getattr(self, key), low=0)
        _check_range("lr", self.lr, low=0, low_open=True)
        _check_range("mask_ratio", self.mask_ratio, low=0, high=1, low_open=True, high_open=True)
        _check_range("crop_scale_min", self.crop_scale_min, low=0, high=1, low_open=True)
        _check_range("hflip", self.hflip, low=0, high=1)
        if self.warmup_epochs > self.epochs:
            raise ValidationError(f"Config key 'warmup_epochs' ({self.warmup_epochs:g}) is larger than 'epochs' "
                                  f"({self.epochs}).")
        if self.decoder_dim % self.decoder_heads:
            raise ValidationError(f"Config key 'decoder_dim' ({self.decoder_dim}) must be a multiple of "
                                  f"'decoder_heads' ({self.decoder_heads}).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAEConfig:
        """Build from a plain dict; unknown keys and wrong types are errors naming the key."""
        return build_dataclass(cls, data, prefix="")
