"""Model factory: any timm backbone by name, or a user's own factory registered under a name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ensemble_kit._registry import Registry
from ensemble_kit.errors import CheckpointError, ValidationError
from ensemble_kit.train.config import check_model_kwargs

logger = logging.getLogger(__name__)

ModelFactory = Callable[..., nn.Module]
#: Model factories registered by name; they take precedence over timm's models of the same name.
MODEL_FACTORIES: Registry[ModelFactory] = Registry("model factory")


def register_model_factory(name: str, factory: ModelFactory | None = None, *, replace: bool = False) -> Any:
    """Register ``factory(num_classes=..., drop_rate=..., drop_path_rate=...) -> nn.Module`` as ``model: name``.

    Registered names take precedence over timm's; registering a name twice is an error unless
    ``replace=True``. Usable as a decorator.

    Examples
    --------
    >>> @register_model_factory("tiny_linear")
    ... def tiny_linear(num_classes, **_):
    ...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))
    >>> build_model("tiny_linear", num_classes=3).__class__.__name__
    'Sequential'
    """
    return MODEL_FACTORIES.register(name, factory, replace=replace)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.) with a learnable exponent ``p``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class _GeMHead(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GeM()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)
        if features.ndim != 4:
            raise ValidationError(
                f"GeM pooling needs a convolutional feature map (N, C, H, W); this backbone gives shape "
                f"{tuple(features.shape)}. Use pooling='default' for transformers."
            )
        return self.fc(self.drop(self.pool(features)))


def build_model(name: str, *, num_classes: int, img_size: int | None = None, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, pooling: str = "default", pretrained: bool = False,
                 pretrained_path: str | None = None, model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a classifier with ``num_classes`` outputs.

    ``model_kwargs`` go to the timm constructor (e.g. ``{"patch_size": 4}`` for a ViT on 32 px
    images); a keyword the model does not take is an error naming it. Only plain architecture
    arguments pass (see :func:`~ensemble_kit.train.config.check_model_kwargs`): keys this
    function or timm's factory own (``num_classes``, ``pretrained``, ``drop_rate``, ...) and
    anything that would make timm read a file or a URL (``checkpoint_path``,
    ``pretrained_cfg``, ...) are a :class:`ValidationError`, checked again here although
    :class:`~ensemble_kit.train.TrainConfig` checks them, because the config's dict can be
    changed after it was validated and callers may pass their own.

    ``pretrained=True`` asks timm for hub weights (needs network); ``pretrained_path`` loads a
    local checkpoint (state dict in ``.pth``/``.pt``/``.safetensors``) with the classifier
    head dropped when its shape differs.
    """
    check_model_kwargs(model_kwargs, pooling=pooling)
    if name in MODEL_FACTORIES:
        model = MODEL_FACTORIES.get(name)(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    else:
        if not timm.is_model(name):
            raise ValidationError(
                f"Unknown model {name!r}: neither registered with register_model_factory() nor a timm model "
                f"(see timm.list_models()). Registered: {MODEL_FACTORIES.names()}."
            )
        kwargs: dict[str, Any] = dict(pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate,
                                      **(model_kwargs or {}))
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        try:
            # Vision transformers fix their input size at construction; CNNs reject the argument.
            model = timm.create_model(name, img_size=img_size, **kwargs) if img_size else timm.create_model(name, **kwargs)
        except TypeError:
            try:
                model = timm.create_model(name, **kwargs)
            except TypeError as exc:
                raise ValidationError(f"Model {name!r} rejected its arguments (model_kwargs={dict(model_kwargs or {})}): "
                                      f"{exc}") from exc
        if pooling == "gem":
            model.reset_classifier(0, global_pool="")
            model = _GeMHead(model, num_classes, drop_rate)
    if pooling not in ("default", "gem"):
        raise ValidationError(f"pooling must be 'default' or 'gem'; got {pooling!r}.")
    if pooling == "gem" and name in MODEL_FACTORIES:
        raise ValidationError("pooling='gem' applies to timm backbones; a registered factory builds its own head.")
    if pretrained_path:
        load_checkpoint(model, pretrained_path)
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load weights from a local file into ``model`` (never unpickles arbitrary objects).

    Every tensor of the model must come from the file, and every tensor of the file must fit
    the model, except the classifier head's (a new head for this task's classes: left at its
    init when the file has none or one of another shape). Anything else that is missing,
    unexpected or of another shape is a :class:`CheckpointError` listing the keys: a silently
    partial load would fine-tune a half-random network.
    """
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"pretrained_path {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "model_state"):
                if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                    state = state[key]
    except Exception as exc:  # a damaged or foreign file: safetensors, pickle (weights-only) or zip errors
        raise CheckpointError(f"pretrained_path {str(path)!r} cannot be read as weights "
                              f"({type(exc).__name__}: {exc}).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"pretrained_path {str(path)!r} does not hold a state dict of tensors.")
    own = model.state_dict()
    prefix = "backbone." if isinstance(model, _GeMHead) else ""
    renamed = {(prefix + key if prefix and prefix + key in own else key): value for key, value in state.items()}
    head = _head_keys(model)
    wrong_shape = sorted(k for k, v in renamed.items() if k in own and own[k].shape != v.shape and k not in head)
    unexpected = sorted(k for k in renamed if k not in own)
    missing = sorted(k for k in own if k not in renamed and k not in head)
    if wrong_shape or unexpected or missing:
        def listed(keys: list[str]) -> str:
            return f"{len(keys)} ({', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''})"

        raise CheckpointError(
            f"pretrained_path {str(path)!r} does not fit model {type(model).__name__}: missing {listed(missing)}, "
            f"unexpected {listed(unexpected)}, other shape {listed(wrong_shape)}. Check that the model name, "
            "img_size and model_kwargs match those the weights were trained with."
        )
    usable = {k: v for k, v in renamed.items() if own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    logger.info("Loaded %d tensors from %s; classifier head %s", len(usable), path,
                "loaded" if head and head <= set(usable) else "left at init")


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier head (``get_classifier()``; a GeM head's ``fc``)."""
    head = model.fc if isinstance(model, _GeMHead) else (model.get_classifier() if hasattr(model, "get_classifier")
                                                          else None)
    if not isinstance(head, nn.Module):
        return set()
    for name, module in model.named_modules():
        if module is head:
            return {f"{name}.{key}" if name else key for key in module.state_dict()}
    return set()


@register_model_factory("plain_cnn")
def plain_cnn(num_classes: int, drop_rate: float = 0.0, **_: Any) -> nn.Module:
    """The plain VGG-style CNN of the CIFAR-10 study (no skip connections)."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(drop_rate), nn.Linear(128, num_classes))


class _MultiScaleResNet(nn.Module):
    """ResNet-18 with a CIFAR stem whose head sees pooled features of its last three stages.

    The CIFAR-10 study's multi-scale ResNet-18: a 3x3 stride-1 stem without max-pooling (so a
    32 px image keeps 4x4 maps in the last stage instead of 1x1), and a head on the concatenated
    global averages of stages 2, 3 and 4.
    """

    def __init__(self, num_classes: int, drop_rate: float, drop_path_rate: float) -> None:
        super().__init__()
        body = timm.create_model("resnet18", pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        body.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        body.maxpool = nn.Identity()
        self.body = body
        width = sum(stage[-1].conv2.out_channels for stage in (body.layer2, body.layer3, body.layer4))
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.body
        x = b.layer1(b.act1(b.bn1(b.conv1(x))))
        pooled = []
        for stage in (b.layer2, b.layer3, b.layer4):
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))
        return self.head(torch.cat(pooled, dim=1))


@register_model_factory("resnet18_multiscale")
def resnet18_multiscale(num_classes: int, drop_rate: float = 0.0, drop_path_rate: float = 0.0, **_: Any) -> nn.Module:
    """ResNet-18 with a CIFAR stem (3x3, stride 1, no max-pool) and a head on stages 2-4 (the CIFAR-10 study)."""
    return _MultiScaleResNet(num_classes, drop_rate, drop_path_rate)


def input_sizes(cfg: Any) -> dict[int, str]:
    """Every square input size a fold run feeds the model, with the config key that sets it."""
    from ensemble_kit.train.tta import view_size

    eval_size = cfg.augment.test_img_size or cfg.img_size
    sizes = {cfg.img_size: "img_size"}
    sizes.setdefault(eval_size, "augment.test_img_size")
    for view in cfg.tta.views:
        sizes.setdefault(view_size(view, eval_size), f"tta.views ({view!r})")
    return sizes


def check_model_inputs(cfg: Any, num_classes: int) -> None:
    """Build ``cfg.model`` and run a batch of two at every input size training and TTA will use.

    A size the model cannot take (too small for its downsampling, or not the fixed size of a
    ViT/Swin) is a :class:`ValidationError` naming the config key, before any training starts
    instead of after the last epoch of a fold. ``cfg`` is a :class:`TrainConfig`.
    """
    from ensemble_kit.train._rng import isolated_global_rngs

    reg = cfg.regularization
    with isolated_global_rngs(cfg.seed):  # building the model draws weights: leave the caller's RNG alone
        model = build_model(cfg.model, num_classes=num_classes, img_size=cfg.img_size, drop_rate=reg.drop_rate,
                            drop_path_rate=reg.drop_path_rate, pooling=cfg.pooling, pretrained=cfg.pretrained,
                            pretrained_path=cfg.pretrained_path, model_kwargs=cfg.model_kwargs)
    model.eval()
    for size, key in input_sizes(cfg).items():
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, 3, size, size))
        except (RuntimeError, ValueError, AssertionError, TypeError, IndexError) as exc:
            raise ValidationError(
                f"Config key '{key}': model {cfg.model!r} cannot take {size}x{size} inputs "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}). Choose a size the model "
                "accepts (fixed-size transformers need exactly their img_size)."
            ) from exc
        if tuple(out.shape) != (2, num_classes):
            raise ValidationError(f"Config key 'model': {cfg.model!r} returns shape {tuple(out.shape)} for a batch of 2; "
                                  f"expected (2, {num_classes}) logits.")
