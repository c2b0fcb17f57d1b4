"""Fold models exported for inference: weights-only safetensors next to the resolved config.

At the end of every fold the trainer writes ``runs/<model>/fold<k>/model/`` with
``weights.safetensors`` (the weights that made the fold's stored predictions: EMA weights when
EMA is on, the best epoch's with early stopping) and ``model.json`` (the resolved training
config, the classes, the fold's normalisation and input size, the TTA views). Inference needs
neither optimizer state nor the training code path, and loading is safe from an untrusted
folder: JSON and a safetensors file, checksummed, loaded with strict key matching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ensemble_kit._version import __version__
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.store._artifacts import ArtifactKind, ArtifactReader, ArtifactWriter, publish
from ensemble_kit.train.config import TrainConfig
from ensemble_kit.train.models import build_model

__all__ = ["FOLD_MODEL_FORMAT", "FoldModelInfo", "export_fold_model", "load_fold_model"]

FOLD_MODEL_FORMAT = "ensemble_kit.fold_model"
FOLD_MODEL_VERSION = 1
MANIFEST = "model.json"
EXPORT_DIR = "model"
#: The largest input size (px) an exported model may declare: every image is resized to it, so a
#: larger one from an edited file would make prediction allocate gigabytes per image.
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class FoldModelInfo:
    """What an exported fold model needs at inference time besides its weights."""

    config: TrainConfig
    classes: tuple[Any, ...]
    fold: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def eval_size(self) -> int:
        return self.config.augment.test_img_size or self.config.img_size

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.config.tta.views)


def export_fold_model(folder: Path, model: nn.Module, *, config: TrainConfig, classes: list[Any], fold: int,
                      mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """Write ``model``'s weights and what inference needs as the artifact folder ``folder``."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with publish(folder, ArtifactKind(MANIFEST, FOLD_MODEL_FORMAT)) as staging:
        out = ArtifactWriter(staging)
        document = {
            "format": FOLD_MODEL_FORMAT, "version": FOLD_MODEL_VERSION, "library_version": __version__,
            "torch_version": torch.__version__, "config": _portable(config.to_dict()), "classes": list(classes), "fold": int(fold),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "weights": out.blob("weights", save(state), suffix=".safetensors"),
        }
        out.manifest(MANIFEST, document)
    return folder


def _portable(config: dict[str, Any]) -> dict[str, Any]:
    """The config without paths of this machine: an exported model travels in bundles, and its
    weights already hold what ``pretrained_path`` loaded, so only the file's name is kept."""
    if config.get("pretrained_path"):
        config = {**config, "pretrained_path": Path(config["pretrained_path"]).name}
    return config


def read_fold_model_info(folder: Path) -> tuple[FoldModelInfo, ArtifactReader]:
    source = ArtifactReader(folder, MANIFEST, format_name=FOLD_MODEL_FORMAT, versions=(FOLD_MODEL_VERSION,))
    document = source.document
    try:
        info = FoldModelInfo(config=TrainConfig.from_dict(document["config"]), classes=tuple(document["classes"]),
                             fold=int(document["fold"]), mean=tuple(float(m) for m in document["mean"]),
                             std=tuple(float(s) for s in document["std"]))
    except ValidationError as exc:
        raise ArtifactError(f"{str(source.where)!r}: the saved training config is not valid: {exc}") from exc
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ArtifactError(f"{str(source.where)!r} is malformed ({type(exc).__name__}: {exc}).") from exc
    if len(info.mean) != 3 or len(info.std) != 3 or not all(math.isfinite(v) for v in (*info.mean, *info.std)) \
            or min(info.std) <= 0:
        raise ArtifactError(f"{str(source.where)!r}: normalisation must be 3 finite means and 3 positive deviations.")
    if not 1 <= info.eval_size <= MAX_IMAGE_SIZE:
        raise ArtifactError(f"{str(source.where)!r}: input size {info.eval_size} px is outside 1..{MAX_IMAGE_SIZE} "
                            "(every image is resized to it before prediction).")
    return info, source


def load_fold_model(folder: Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, FoldModelInfo]:
    """The exported model of one fold, in eval mode, and its inference settings.

    The architecture is rebuilt from the saved config (never from a pickled object, and never
    downloading or reading any other weights); the weights must match it key for key, else an
    :class:`ArtifactError` lists the missing and unexpected keys.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    info, source = read_fold_model_info(folder)
    cfg = info.config
    reg = cfg.regularization

    def build() -> nn.Module:
        return build_model(cfg.model, num_classes=len(info.classes), img_size=cfg.img_size, drop_rate=reg.drop_rate,
                           drop_path_rate=reg.drop_path_rate, pooling=cfg.pooling, pretrained=False,
                           pretrained_path=None, model_kwargs=cfg.model_kwargs)

    # The architecture comes from a file from elsewhere: it is built first on the meta device (no
    # memory), and must be no larger than the weights it is to hold, before it is built for real.
    # timm's constructors report bad arguments with any exception type (KeyError, AssertionError,
    # ZeroDivisionError, ...), so every one of them is turned into a named error here.
    try:
        with torch.device("meta"):
            skeleton = build()
    except Exception as exc:
        raise ArtifactError(f"{str(source.where)!r}: model {cfg.model!r} cannot be built from its saved config "
                            f"({type(exc).__name__}: {exc}).") from exc
    needed = sum(t.numel() * t.element_size() for t in (*skeleton.parameters(), *skeleton.buffers()))
    stored = source.files.get("weights", {}).get("bytes") if isinstance(source.files.get("weights"), dict) else None
    if isinstance(stored, int) and needed > stored:
        raise ArtifactError(f"{str(source.where)!r}: model {cfg.model!r} as configured needs {needed:,} bytes of "
                            f"weights; the weights file holds {stored:,}. The config was edited.")
    try:
        model = build()
    except Exception as exc:  # see above
        raise ArtifactError(f"{str(source.where)!r}: model {cfg.model!r} cannot be built ({type(exc).__name__}: "
                            f"{exc}).") from exc
    try:
        state = load(source.blob(source.document.get("weights")))
    except SafetensorError as exc:
        raise ArtifactError(f"{str(source.where)!r}: the weights file cannot be read ({exc}).") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        raise ArtifactError(
            f"{str(source.where)!r}: the weights do not match model {cfg.model!r} as configured: "
            f"{len(missing)} missing (e.g. {missing[:5]}), {len(unexpected)} unexpected (e.g. {unexpected[:5]}), "
            f"{len(wrong_shape)} of another shape (e.g. {wrong_shape[:5]}).")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), info
