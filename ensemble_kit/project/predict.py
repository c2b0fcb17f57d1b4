"""Predicting new images with every fold model, its TTA views and the fitted stack.

A :class:`Predictor` holds, for each base model, the exported model of every fold (weights,
normalisation, input size, TTA views) and the fitted Stacker with its decision rules. It comes
from a trained project (:meth:`Predictor.from_project`) or from a self-contained bundle folder
(:meth:`Predictor.load`, written by :meth:`Predictor.save_bundle`) that needs no store and no
network. Images stream through a DataLoader in batches: each is decoded and resized once per
input size, then every fold model of every model of that size sees every TTA view. A model's
logits are the mean over views of each fold model, then the mean over folds, exactly how the
trainer computed the test logits it stored, so predicting the store's own test images
reproduces them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ensemble_kit._progress import progress
from ensemble_kit._version import __version__
from ensemble_kit.data.sources import CsvImageSource, ImageDirSource, ImageFolderSource, ImagePathSource, ImageSource
from ensemble_kit.data.transforms import _chw_tensor
from ensemble_kit.ensemble._persist import save_stack
from ensemble_kit.ensemble.stacker import Stacker
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.metrics import log_softmax
from ensemble_kit.project.config import ProjectConfig, SubmissionConfig, check_image_paths
from ensemble_kit.project.results import list_stacks, load_stack
from ensemble_kit.project.submission import build_submission, check_table_classes, prediction_table
from ensemble_kit.store import LogitStore, check_name
from ensemble_kit.store._artifacts import ArtifactKind, ArtifactReader, ArtifactWriter, publish
from ensemble_kit.store._paths import safe_dir
from ensemble_kit.train.export import EXPORT_DIR, FoldModelInfo, load_fold_model
from ensemble_kit.train.trainer import resolve_device
from ensemble_kit.train.tta import predict_views

__all__ = ["BUNDLE_FORMAT", "Predictor", "image_source"]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "ensemble_kit.bundle"
#: 2: the stack is a stack-format-2 artifact and the manifest carries its own checksum.
BUNDLE_VERSION = 2
BUNDLE_MANIFEST = "bundle.json"
#: What a bundle may replace: an earlier bundle holding nothing but its manifest, models/ and stack/.
BUNDLE_KIND = ArtifactKind(BUNDLE_MANIFEST, BUNDLE_FORMAT, entries=frozenset({"models", "stack"}))


def image_source(path: str | Path | Sequence[str | Path], *, classes: Sequence[Any] | None = None, id_col: str = "id",
                 path_col: str = "path", folder_ids: str = "auto") -> ImageSource:
    """The images at ``path`` (one path, or a list of image files), laid out like the training sources.

    A folder of class folders is an ImageFolder (labelled; ids: file names without extension when
    they are unique, else ``<class>/<file>``; ``folder_ids`` as ``data.test_ids``); a flat folder
    gives one image per file (ids: file names without extension); a CSV either has a ``path_col``
    column (paths relative to the CSV's folder; ids from ``id_col`` when present, else the file
    names without extension) or an ``id_col`` column naming images next to the CSV; one or more
    image files are those images (ids: their names without extension, which must then differ).

    The paths are checked first (:func:`~ensemble_kit.project.config.check_image_paths`); a
    folder or a CSV without any image is refused too, naming it (as ``--images``).
    """
    paths = check_image_paths(path)
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        if any(child.is_dir() for child in root.iterdir()):
            return ImageFolderSource(root, classes=classes, ids=folder_ids)
        return ImageDirSource(root, classes=classes)
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        csv = paths[0]
        try:
            header = [str(c) for c in pd.read_csv(csv, nrows=0).columns]
            rows = len(pd.read_csv(csv, usecols=[0]))
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ValidationError(f"--images {str(csv)!r} cannot be read as a CSV ({type(exc).__name__}: {exc}).") from exc
        if path_col not in header and id_col not in header:
            raise ValidationError(f"--images {str(csv)!r}: no {path_col!r} column (image paths) or {id_col!r} column "
                                  f"(images next to the CSV); its columns are {header[:10]}.")
        if not rows:
            raise ValidationError(f"--images {str(csv)!r}: the CSV lists no images.")
        if path_col in header:
            return ImagePathSource.from_csv(csv, path_col=path_col, id_col=id_col if id_col in header else None,
                                            classes=classes)
        return CsvImageSource(csv, csv.parent, id_col=id_col, classes=classes)
    return ImagePathSource(paths, classes=classes)


@dataclass
class _Fold:
    model: nn.Module
    info: FoldModelInfo
    folder: Path


@dataclass
class _Model:
    name: str
    folds: list[_Fold]

    @property
    def eval_size(self) -> int:
        return self.folds[0].info.eval_size

    @property
    def views(self) -> tuple[str, ...]:
        return self.folds[0].info.views


class _Resized(Dataset):
    """Images of a source as uint8 ``(3, size, size)`` tensors (resized like the eval transform)."""

    def __init__(self, source: ImageSource, size: int) -> None:
        self.source = source
        self.resize = v2.Resize((size, size), antialias=True)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.resize(_chw_tensor(self.source.load(index)))


class Predictor:
    """Every fold model of every base model, their TTA views and the fitted stack, applied to new images.

    Parameters
    ----------
    models : dict name -> list of exported fold model folders
    stack : Stacker, optional
        The fitted stack (its model names must be the models'); ``None`` for a single model,
        whose fold-averaged probabilities are then the prediction.
    classes : list
    submission : SubmissionConfig, optional
        Format of :meth:`submission` (default: probabilities for log-loss stacks, else labels).
    device : str
        ``"auto"``: CUDA, then MPS, then CPU. AMP and channels_last are used on CUDA.
    batch_size : int, optional
        Images per batch (default: twice the largest training batch size).
    num_workers : int
        DataLoader workers decoding images.

    Examples
    --------
    ``Predictor.from_project("config.yaml").predict(image_source("test/"))``; see
    ``docs/predicting.md``.
    """

    def __init__(self, models: dict[str, list[Path]], *, stack: Stacker | None, classes: list[Any],
                 submission: SubmissionConfig | None = None, device: str = "auto", batch_size: int | None = None,
                 num_workers: int = 0) -> None:
        if not models:
            raise ValidationError("A Predictor needs at least one model.")
        self.device = resolve_device(device)
        self.classes = list(classes)
        self.stack = stack
        self.submission_config = submission or SubmissionConfig()
        self.num_workers = num_workers
        self.models = [_Model(name, [_Fold(*load_fold_model(folder, device=self.device), folder) for folder in folders])
                       for name, folders in models.items()]
        for model in self.models:
            for fold in model.folds:
                if [str(c) for c in fold.info.classes] != [str(c) for c in self.classes]:
                    raise ArtifactError(f"{str(fold.folder)!r} was trained on classes {list(fold.info.classes)[:10]}, "
                                        f"not {self.classes[:10]}.")
                if fold.info.views != model.views or fold.info.eval_size != model.eval_size:
                    raise ArtifactError(f"Model {model.name!r}: fold {fold.info.fold} uses other TTA views or input "
                                        "size than its other folds.")
        names = tuple(m.name for m in self.models)
        if stack is not None and tuple(stack.model_names_) != names:
            raise ValidationError(f"The stack was fitted on models {list(stack.model_names_)}, the predictor holds "
                                  f"{list(names)}.")
        if stack is None and len(self.models) > 1:
            raise ValidationError(f"{len(self.models)} models need a fitted stack to combine them; fit one with "
                                  "`ensemble-kit stack STORE` first.")
        self.batch_size = batch_size or 2 * max(f.info.config.batch_size for m in self.models for f in m.folds)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_project(cls, config: ProjectConfig | str | Path, *, stack: str | None = None,
                     overrides: Sequence[str] = (), **options: Any) -> Predictor:
        """The predictor of a trained project: its store's exported fold models and a saved stack.

        ``stack`` names a saved stack (default: the latest one); its models are the ones used. A
        project with one model and no stack predicts with that model alone.
        """
        cfg = config if isinstance(config, ProjectConfig) else ProjectConfig.from_yaml(config, overrides=overrides)
        store = LogitStore(cfg.store)
        stacker, names = None, None
        if stack is not None or list_stacks(store):
            saved = load_stack(store, stack)
            stacker, names = saved.load_stacker(), saved.models
        else:
            names = store.models()
            if len(names) != 1:
                raise ValidationError(f"Store {str(store.path)!r} has {len(names)} models and no fitted stack; run "
                                      f"`ensemble-kit stack {store.path}` first.")
        models = {name: [store.workspace.fold_dir(name, k) / EXPORT_DIR for k in range(store.n_folds)] for name in names}
        missing = [str(f) for folders in models.values() for f in folders if not (f / "model.json").is_file()]
        if missing:
            raise ArtifactError(f"No exported fold model at {missing[:3]} ({len(missing)} in all): these models were "
                                "trained before fold models were exported, or elsewhere. Retrain them with "
                                "`ensemble-kit train`, or import predictions only.")
        return cls(models, stack=stacker, classes=store.classes, submission=cfg.submission, **options)

    @classmethod
    def load(cls, bundle: str | Path, **options: Any) -> Predictor:
        """A predictor from a bundle folder written by :meth:`save_bundle` (no store, no network)."""
        # the folder you name may be reached through a link of yours (`current -> bundle-2026-12-01`);
        # links inside it are refused
        folder = Path(bundle).resolve()
        reader = ArtifactReader(folder, BUNDLE_MANIFEST, format_name=BUNDLE_FORMAT, versions=(1, BUNDLE_VERSION),
                                sealed_versions=(BUNDLE_VERSION,))
        document = reader.document
        where = str(reader.where)
        try:
            saved_models, classes = document["models"], document["classes"]
            if not isinstance(saved_models, dict) or not saved_models or not all(
                    isinstance(folds, list) and folds and len(set(folds)) == len(folds)
                    and all(type(k) is int and k >= 0 for k in folds) for folds in saved_models.values()):
                raise ArtifactError(f"{where}: 'models' must map each model to a non-empty list of distinct fold "
                                    "numbers.")
            if not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes) \
                    or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
                raise ArtifactError(f"{where}: 'classes' must list at least two distinct class names (text or "
                                    "integers).")
            if not isinstance(document["stack"], bool):
                raise ArtifactError(f"{where}: 'stack' must be true or false; got {document['stack']!r}.")
            models = {check_name(name, what="model name"): [safe_dir(folder, "models", name, f"fold{k}")
                                                            for k in folds]
                      for name, folds in saved_models.items()}
            stack = Stacker.load(safe_dir(folder, "stack")) if document["stack"] else None
            submission = SubmissionConfig(**document["submission"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{where} is malformed ({type(exc).__name__}: {exc}).") from exc
        return cls(models, stack=stack, classes=list(classes), submission=submission, **options)

    def save_bundle(self, out: str | Path) -> Path:
        """One folder with everything inference needs and nothing else: every fold's weights and
        settings, the stack, the classes and the submission format (no OOF logits, no optimizer
        state, no OOF predictions, no path of this machine). Replaces an earlier bundle at ``out``
        atomically; any other non-empty folder (a store, the current folder, your notes) is refused
        with :class:`~ensemble_kit.errors.DestinationError` and left as it was."""
        out = Path(out)
        with publish(out, BUNDLE_KIND, outside_stores=True) as staging:
            for model in self.models:
                for fold in model.folds:
                    target = safe_dir(staging, "models", model.name, create=True) / f"fold{fold.info.fold}"
                    shutil.copytree(fold.folder, target, symlinks=True)
            if self.stack is not None:
                save_stack(self.stack, staging / "stack", predictions=False)
            writer = ArtifactWriter(staging)
            writer.manifest(BUNDLE_MANIFEST, {
                "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "library_version": __version__,
                "classes": self.classes, "stack": self.stack is not None,
                "models": {m.name: [f.info.fold for f in m.folds] for m in self.models},
                "submission": {"format": self.submission_config.format, "id_col": self.submission_config.id_col,
                               "label_col": self.submission_config.label_col}})
        return out

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_logits(self, images: ImageSource) -> dict[str, NDArray[np.float32]]:
        """Fold-averaged logits ``(n, C)`` of every model (each fold: the mean over its TTA views)."""
        images.check()
        if images.classes and [str(c) for c in images.classes] != [str(c) for c in self.classes]:
            raise ValidationError(f"The images are labelled with classes {images.classes[:10]}, the models predict "
                                  f"{self.classes[:10]}.")
        out: dict[str, NDArray[np.float32]] = {}
        by_size: dict[int, list[_Model]] = {}
        for model in self.models:
            by_size.setdefault(model.eval_size, []).append(model)
        use_amp = self.device.type == "cuda"
        for size, group in by_size.items():
            start = time.perf_counter()
            sums = {m.name: [] for m in group}
            loader = DataLoader(_Resized(images, size), batch_size=self.batch_size, shuffle=False,
                                num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
            names = ", ".join(m.name for m in group)
            for batch in progress(loader, desc=f"predict {names} ({size} px)"):
                batch = batch.to(self.device, non_blocking=True)
                for model in group:
                    per_fold = []
                    for fold in model.folds:
                        x = v2.Normalize(list(fold.info.mean), list(fold.info.std))(
                            v2.ToDtype(torch.float32, scale=True)(batch))
                        if use_amp:
                            x = x.contiguous(memory_format=torch.channels_last)
                        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                            per_fold.append(predict_views(fold.model, x, model.views).float().mean(dim=0).cpu())
                    sums[model.name].append(torch.stack(per_fold).mean(dim=0))
            for model in group:
                out[model.name] = torch.cat(sums[model.name]).numpy().astype(np.float32)
                logger.info("predicted %d images with %s (%d folds x %d views) in %.1fs", len(images), model.name,
                            len(model.folds), len(model.views), time.perf_counter() - start)
        return {m.name: out[m.name] for m in self.models}

    def predict_proba(self, images: ImageSource) -> NDArray:
        """Probabilities ``(n, C)``: the stack's, or the single model's softmax."""
        logits = self.predict_logits(images)
        if self.stack is None:
            (only,) = logits.values()
            return np.exp(log_softmax(only))
        return self.stack.predict_proba(logits)

    def predict(self, images: ImageSource) -> NDArray[np.int64]:
        """Class indices, under the stack's decision rules (the AOI rule, tuned offsets) when it has them."""
        return self._decide(self.predict_proba(images))

    def _decide(self, proba: NDArray) -> NDArray[np.int64]:
        return self.stack.decide(proba) if self.stack is not None else proba.argmax(axis=1)

    def predictions(self, images: ImageSource) -> pd.DataFrame:
        """``id, label, confidence, <class...>`` for ``images``: the decided class, its probability and
        every class's (see :func:`~ensemble_kit.project.submission.prediction_table`)."""
        check_table_classes(self.classes)  # before any image is predicted
        proba = self.predict_proba(images)
        return prediction_table(images.ids, proba, self._decide(proba), self.classes)

    def submission(self, images: ImageSource, *, sample_submission: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
        """The competition file for ``images`` (see :func:`~ensemble_kit.project.submission.build_submission`)."""
        proba = self.predict_proba(images)
        cfg = self.submission_config
        return build_submission(images.ids, proba, self._decide(proba), self.classes, format=cfg.format,
                                metric=self.stack.metric if self.stack is not None else "log_loss", id_col=cfg.id_col,
                                label_col=cfg.label_col, sample_submission=sample_submission)
