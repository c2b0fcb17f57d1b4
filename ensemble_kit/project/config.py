"""The project config: one YAML file naming the data, the folds, the models and the stack.

Everything is a frozen dataclass; YAML is read and written only here. Unknown keys and bad
values are errors naming the full dotted key (``models.resnet.optimizer.lr``). Relative paths
are relative to the working directory the command runs in.
"""

from __future__ import annotations

import copy
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

import yaml

from ensemble_kit._config import build_dataclass, set_dotted
from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, RECIPES
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import METRICS
from ensemble_kit.store._files import write_text
from ensemble_kit.store._paths import case_collision, check_name

if TYPE_CHECKING:  # a project's models need the train extra; its stack and submission sections do not
    from ensemble_kit.train.config import TrainConfig

logger = logging.getLogger(__name__)

DATA_FORMATS = ("digits", "folder", "csv", "cifar10_batches")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from.

    ``format``:

    - ``digits``: scikit-learn's handwritten digits rendered as ``image_size`` images (embedded,
      no files; a stratified ``test_fraction`` is held out as the labelled test set).
    - ``folder``: ``train`` is an ImageFolder (``<class>/<image>``); ``test`` is either an
      ImageFolder (labelled, scored in reports) or a flat folder of images. Test ids are the
      file names without extension (``test_ids: stem``, what a competition's id column holds),
      or ``<class>/<file>`` (``test_ids: path``); ``auto`` (default): file names when they are
      unique, else paths (class folders that repeat file names, like CIFAR-10's).
    - ``csv``: ``train`` is a CSV with ``id_col`` and ``label_col``, images in ``train_images``;
      ``test`` is a CSV with ``id_col`` (images in ``test_images``) or, without ``test``, every
      image in ``test_images``. ``ext`` is appended to ids that have no extension.
    - ``cifar10_batches``: ``root`` holds the pickled ``cifar-10-batches-py`` files.
    """

    format: Literal["digits", "folder", "csv", "cifar10_batches"] = "digits"
    root: str = "."
    train: Optional[str] = None
    test: Optional[str] = None
    train_images: Optional[str] = None
    test_images: Optional[str] = None
    id_col: str = "id"
    label_col: str = "label"
    ext: Optional[str] = None
    test_ids: Literal["auto", "stem", "path"] = "auto"
    image_size: int = 32
    test_fraction: float = 0.2
    cache: bool = True

    def __post_init__(self) -> None:
        if self.format == "folder" and not self.train:
            raise ValidationError("Config key 'data.train' is required for format 'folder' (the ImageFolder root).")
        if self.format == "csv":
            if not self.train or not self.train_images:
                raise ValidationError("Format 'csv' needs 'data.train' (the labels CSV) and 'data.train_images' "
                                      "(its image folder).")
            if self.test and not self.test_images:
                raise ValidationError("Config key 'data.test_images' is required when 'data.test' names a test CSV.")
        if self.format == "digits" and not 8 <= self.image_size <= 256:
            raise ValidationError(f"Config key 'data.image_size' must be in [8, 256]; got {self.image_size}.")
        if not 0 < self.test_fraction < 1:
            raise ValidationError(f"Config key 'data.test_fraction' must be in (0, 1); got {self.test_fraction}.")

    def path(self, relative: str) -> Path:
        return Path(self.root) / relative


@dataclass(frozen=True)
class FoldsConfig:
    """Stratified K-fold assignment of the training rows (fixed once the store exists)."""

    n_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValidationError(f"Config key 'folds.n_folds' must be at least 2; got {self.n_folds}.")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Train a model on the labelled data plus the teachers' confident test predictions (Noisy Student)."""

    teachers: tuple[str, ...] = ()
    threshold: Optional[float] = 0.9
    top_fraction: Optional[float] = None
    per_class_cap: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ValidationError("pseudo_label.teachers must name at least one model of the config.")
        if self.top_fraction is not None and self.threshold is not None:
            raise ValidationError("pseudo_label: give threshold or top_fraction, not both (set threshold: null).")


@dataclass(frozen=True)
class DistillSpec:
    """Which models a student is distilled from (``models.<student>.distill.from``), and on what.

    The loss weights (``alpha``, ``temperature``) go to the student's
    :class:`~ensemble_kit.train.config.DistillConfig`; ``unlabeled: true`` adds the test images
    as extra distillation data (soft targets only, no label read).
    """

    teachers: tuple[str, ...] = ()
    unlabeled: bool = False

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ValidationError("distill.from must name at least one model of the config (a teacher).")


@dataclass(frozen=True)
class ModelSpec:
    """One base model: its store entry name, how it is trained, and optional pseudo-labels or teachers."""

    name: str
    train: TrainConfig
    pseudo_label: Optional[PseudoLabelConfig] = None
    distill: Optional[DistillSpec] = None

    @property
    def teachers(self) -> tuple[str, ...]:
        """Models this one learns from (pseudo-labels or distillation): they are trained first."""
        return ((self.pseudo_label.teachers if self.pseudo_label else ())
                + (self.distill.teachers if self.distill else ()))


@dataclass(frozen=True)
class StackConfig:
    """The stacking step (see :class:`~ensemble_kit.Stacker`).

    ``storage`` is where its Optuna studies go: a database URL (``$VARS`` are expanded from the
    environment, so passwords stay out of the file), default the store's own
    ``sqlite:///STORE/optuna.db``. Only the user's own config sets it: a ``storage`` in the
    settings saved inside a store (which may come from elsewhere) is ignored with a warning.
    """

    recipe: str = DEFAULT_RECIPE
    metric: str = "log_loss"
    models: Optional[tuple[str, ...]] = None
    n_trials: int = 200
    seed: int = 0
    name: Optional[str] = None
    storage: Optional[str] = None

    def __post_init__(self) -> None:
        RECIPES.check(self.recipe, key="stack.recipe")
        if self.storage is not None and not self.storage.strip():
            raise ValidationError("Config key 'stack.storage' must be a database URL (e.g. "
                                  "'postgresql://user:${PGPASSWORD}@host/db') or absent (the store's own SQLite file).")
        METRICS.check(self.metric, key="stack.metric")
        if self.n_trials < 1:
            raise ValidationError(f"Config key 'stack.n_trials' must be positive; got {self.n_trials}.")
        if self.name is not None:
            check_name(self.name, what="stack name (config key 'stack.name')", example="full")

    @property
    def result_name(self) -> str:
        """Folder name of the saved result under ``STORE/stacks/`` (default: the recipe)."""
        return self.name or self.recipe


@dataclass(frozen=True)
class SubmissionConfig:
    """Competition file: ``labels`` (id + label) or ``probs`` (id + one column per class).

    ``auto`` writes probabilities when the stack's metric is log loss, labels otherwise.
    """

    format: Literal["auto", "labels", "probs"] = "auto"
    id_col: str = "id"
    label_col: str = "label"


@dataclass(frozen=True)
class ProjectConfig:
    """Data, folds, models and stack of one competition, as one YAML file.

    Examples
    --------
    >>> cfg = ProjectConfig.from_dict({"store": "runs/store", "models": {"r10": {"model": "resnet10t", "epochs": 1}}})
    >>> cfg.models[0].name, cfg.models[0].train.epochs, cfg.folds.n_folds
    ('r10', 1, 5)
    >>> ProjectConfig.from_dict(cfg.to_dict(), overrides=["models.*.img_size=16"]).models[0].train.img_size
    16
    """

    store: str
    models: tuple[ModelSpec, ...]
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if not names:
            raise ValidationError("Config key 'models' must name at least one model.")
        for i, name in enumerate(names):
            check_name(name, what=f"model name (config key 'models.{name}')", example="resnet18@224")
            other = case_collision(name, names[:i])
            if other is not None:
                raise ValidationError(f"Config key 'models': {name!r} and {other!r} differ only in case; on case-"
                                      "insensitive file systems (macOS, Windows) their store entries would collide.")
        for spec in self.models:
            for key, section in (("pseudo_label.teachers", spec.pseudo_label), ("distill.from", spec.distill)):
                if section is None:
                    continue
                unknown = [t for t in section.teachers if t not in names]
                if unknown:
                    raise ValidationError(f"Config key 'models.{spec.name}.{key}': {unknown} are not models of this "
                                          f"config ({names}).")
                if spec.name in section.teachers:
                    kind = "pseudo-label" if key.startswith("pseudo") else "distillation"
                    raise ValidationError(f"Model {spec.name!r} cannot be its own {kind} teacher "
                                          f"('models.{spec.name}.{key}').")
            if spec.distill is not None and spec.pseudo_label is not None:
                raise ValidationError(f"Model {spec.name!r}: pseudo_label and distill cannot be combined; use "
                                      "distill.unlabeled: true to learn from the teachers on the test images.")
        if self.stack.models is not None:
            unknown = [m for m in self.stack.models if m not in names]
            if unknown:
                raise ValidationError(f"Config key 'stack.models': {unknown} are not models of this config ({names}).")

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise ValidationError(f"No model {name!r} in the config; models are {[m.name for m in self.models]}.")

    # ------------------------------------------------------------------ YAML edge
    def to_dict(self) -> dict[str, Any]:
        models = {}
        for spec in self.models:
            entry = spec.train.to_dict()
            if spec.pseudo_label is not None:
                entry["pseudo_label"] = _plain(asdict(spec.pseudo_label))
            if spec.distill is not None:
                entry["distill"] = {"from": list(spec.distill.teachers), "unlabeled": spec.distill.unlabeled,
                                    **(entry.get("distill") or {})}
            models[spec.name] = entry
        return {"store": self.store, "data": asdict(self.data), "folds": asdict(self.folds), "models": models,
                "stack": _plain(asdict(self.stack)), "submission": asdict(self.submission)}

    @classmethod
    def from_dict(cls, data: Any, *, overrides: Sequence[str] = ()) -> ProjectConfig:
        """Validate a plain mapping (after applying ``key=value`` overrides)."""
        if not isinstance(data, dict):
            raise ValidationError(f"A project config must be a YAML mapping; got {type(data).__name__}.")
        data = _with_defaults(copy.deepcopy(data))
        for assignment in overrides:
            set_dotted(data, assignment)
        known = {"store", "data", "folds", "models", "stack", "submission"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(f"Unknown config key(s) {unknown}; valid top-level keys: {sorted(known)}.")
        if not isinstance(data.get("store"), str) or not data["store"]:
            raise ValidationError("Config key 'store' must be the path of the logit store (a string).")
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            raise ValidationError("Config key 'models' must map model names to training configs.")
        specs = []
        for name, entry in models.items():
            check_name(name, what=f"model name (config key 'models.{name}')", example="resnet18@224")
            if not isinstance(entry, dict):
                raise ValidationError(f"Config key 'models.{name}' must be a mapping of training settings; got {entry!r}.")
            entry = dict(entry)
            pseudo = entry.pop("pseudo_label", None)
            distill = _split_distill(entry, name)
            from ensemble_kit.train.config import TrainConfig

            train = build_dataclass(TrainConfig, entry, prefix=f"models.{name}.")
            pseudo_cfg = build_dataclass(PseudoLabelConfig, pseudo, prefix=f"models.{name}.pseudo_label.") if pseudo else None
            specs.append(ModelSpec(str(name), train, pseudo_cfg, distill))
        return cls(
            store=data["store"], models=tuple(specs),
            data=build_dataclass(DataConfig, data["data"], prefix="data."),
            folds=build_dataclass(FoldsConfig, data["folds"], prefix="folds."),
            stack=build_dataclass(StackConfig, data["stack"], prefix="stack."),
            submission=build_dataclass(SubmissionConfig, data["submission"], prefix="submission."),
        )

    @classmethod
    def from_yaml(cls, path: str | Path, *, overrides: Sequence[str] = ()) -> ProjectConfig:
        return _from_yaml(cls, path, overrides)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _split_distill(entry: dict[str, Any], name: str) -> DistillSpec | None:
    """``models.<name>.distill`` -> the project part (``from``, ``unlabeled``); the loss part stays in ``entry``."""
    section = entry.get("distill")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValidationError(f"Config key 'models.{name}.distill' must be a mapping (from, alpha, temperature, "
                              f"unlabeled); got {section!r}.")
    section = dict(section)
    teachers = section.pop("from", None)
    unlabeled = section.pop("unlabeled", False)
    if isinstance(teachers, str):
        teachers = [teachers]
    if not isinstance(teachers, list) or not teachers or not all(isinstance(t, str) for t in teachers):
        raise ValidationError(f"Config key 'models.{name}.distill.from' must name the teacher model(s) of this "
                              f"config (a name or a list of names); got {teachers!r}.")
    if not isinstance(unlabeled, bool):
        raise ValidationError(f"Config key 'models.{name}.distill.unlabeled' must be true or false; got {unlabeled!r}.")
    entry["distill"] = section  # alpha, temperature: the student's TrainConfig.distill
    return DistillSpec(teachers=tuple(teachers), unlabeled=unlabeled)


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill absent sections and model keys with their defaults, so overrides can address any key."""
    defaults = {"data": DataConfig, "folds": FoldsConfig, "stack": StackConfig, "submission": SubmissionConfig}
    for key, section in defaults.items():
        given = data.get(key)
        if given is None:
            given = {}
        if isinstance(given, dict):
            data[key] = {**_plain(asdict(section())), **given}
    models = data.get("models")
    if isinstance(models, dict):
        from ensemble_kit.train.config import TrainConfig

        base = TrainConfig().to_dict()
        for name, entry in list(models.items()):
            if entry is None:
                entry = {}
            if isinstance(entry, dict):
                models[name] = _deep_merge(base, entry)
                if isinstance(entry.get("pseudo_label"), dict):
                    models[name]["pseudo_label"] = {**_pseudo_defaults(), **entry["pseudo_label"]}
    return data


def _pseudo_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(PseudoLabelConfig) if f.name != "teachers"}


def _deep_merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, so the YAML stays plain."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


STORE_SETTINGS = ("project.yaml", "defaults.yaml")  # a trained project's resolved config; an `init` store's
SAMPLE_SUBMISSION = "sample_submission.csv"


def _sections(data: dict[str, Any]) -> tuple[StackConfig, SubmissionConfig]:
    stack = data.get("stack") or {}
    submission = data.get("submission") or {}
    for key, section in (("stack", stack), ("submission", submission)):
        if not isinstance(section, dict):
            raise ValidationError(f"Config key {key!r} must be a mapping; got {section!r}.")
    return (build_dataclass(StackConfig, {**_plain(asdict(StackConfig())), **stack}, prefix="stack."),
            build_dataclass(SubmissionConfig, {**asdict(SubmissionConfig()), **submission}, prefix="submission."))


def project_settings(config_path: str | Path) -> tuple[Path, StackConfig, SubmissionConfig]:
    """The store path and the ``stack:`` and ``submission:`` sections of a project YAML (yours, so
    trusted: its ``stack.storage`` is used), without building its models (no training stack)."""
    path = Path(config_path)
    if not path.is_file():
        raise ValidationError(f"Config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValidationError(f"Config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("store"), str) or not data["store"]:
        raise ValidationError(f"{path}: a project config is a YAML mapping whose key 'store' is the store's path.")
    try:
        stack, submission = _sections(data)
    except ValidationError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    return Path(data["store"]), stack, submission


def stored_settings(store_path: str | Path) -> tuple[StackConfig, SubmissionConfig, Path | None]:
    """The ``stack:`` and ``submission:`` sections a store's project saved (defaults when it saved
    none), and the sample submission ``ensemble-kit init --sample-submission`` kept (or ``None``).

    Only those two sections are read (no model config is built, so no training stack is
    imported); the file comes from a store that may come from elsewhere: it is read as plain
    YAML, size-limited, never through a link, and validated like any config.
    """
    from ensemble_kit.store import Workspace
    from ensemble_kit.store._files import open_regular

    folder = Workspace(store_path).project_dir()
    data: dict[str, Any] = {}
    for name in STORE_SETTINGS:
        path = folder / name
        if not path.is_file():
            continue
        with open_regular(path) as fh:
            raw = fh.read(1 << 20)
        try:
            data = yaml.safe_load(raw.decode("utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValidationError(f"{str(path)!r} must hold a YAML mapping.")
        break
    stack_section = data.get("stack") or {}
    if isinstance(stack_section, dict) and stack_section.get("storage") is not None:
        stack_section = {key: value for key, value in stack_section.items() if key != "storage"}
        # a store may come from elsewhere: its settings never point this machine at a database
        logger.info("%s: stack.storage saved in the store is not used; give --storage URL, or the project YAML "
                    "whose stack.storage names it", folder)
    stack, submission = _sections({"stack": stack_section, "submission": data.get("submission")})
    sample = folder / SAMPLE_SUBMISSION
    return stack, submission, (sample if sample.is_file() else None)


def submission_with_overrides(submission: SubmissionConfig, overrides: Sequence[str]) -> SubmissionConfig:
    """``submission`` with ``submission.<key>=value`` overrides applied and validated like a config
    file's (an unknown key is an error with a did-you-mean; a bad value names its key)."""
    data = {"submission": asdict(submission)}
    for assignment in overrides:
        set_dotted(data, assignment)
    return build_dataclass(SubmissionConfig, data["submission"], prefix="submission.")


def write_store_defaults(store_path: str | Path, submission: SubmissionConfig, *,
                         sample_submission: str | Path | None = None) -> Path:
    """Save the submission settings (and a copy of the sample submission) of a bring-your-own store."""
    import shutil

    from ensemble_kit.store import Workspace

    folder = Workspace(store_path).project_dir(create=True)
    path = write_text(folder / STORE_SETTINGS[1], yaml.safe_dump({"submission": asdict(submission)}, sort_keys=False))
    if sample_submission is not None:
        shutil.copyfile(sample_submission, folder / SAMPLE_SUBMISSION)
    return path


def check_image_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The images to predict (``--images``) as a list of paths, checked without reading an image.

    One folder, one ``.csv`` file, or one or more image files (an image extension, any case).
    Each path must exist and be readable; a folder or a CSV comes alone; image files are named
    by their names without extension (their ids), so two files of one name are refused. Every
    refusal is a :class:`~ensemble_kit.errors.ValidationError` naming the path. Nothing here
    imports torch, so ``predict`` names a bad path before the deep-learning stack loads.
    """
    from ensemble_kit.data.sources import IMAGE_EXTENSIONS

    given = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not given:
        raise ValidationError("--images: no path given; name a folder, a CSV, or image files.")
    for path in given:
        problem = _image_path_problem(path, IMAGE_EXTENSIONS)
        if problem is not None:
            raise ValidationError(f"--images {str(path)!r}: {problem}.")
    if len(given) > 1:
        alone = [str(p) for p in given if p.is_dir() or p.suffix.lower() == ".csv"]
        if alone:
            raise ValidationError(f"--images takes one folder, one CSV, or one or more image files; got {len(given)} "
                                  f"paths, among them {alone[0]!r}: give the folder or the CSV alone.")
        stems: dict[str, list[str]] = {}
        for path in given:
            stems.setdefault(path.stem, []).append(str(path))
        repeated = {stem: names for stem, names in stems.items() if len(names) > 1}
        if repeated:
            stem, names = next(iter(repeated.items()))
            raise ValidationError(f"--images: an image file's id is its name without extension, and {len(repeated)} "
                                  f"id(s) repeat (e.g. {stem!r}: {names[:3]}); give each image once, under distinct "
                                  "names.")
    return given


def _image_path_problem(path: Path, extensions: Sequence[str]) -> str | None:
    """Why one ``--images`` path cannot be used (it is never opened), or ``None``."""
    from ensemble_kit.data.decode import file_kind

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "no such file or folder"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return None if os.access(path, os.R_OK | os.X_OK) else "a folder that cannot be read (permission denied)"
    if not stat.S_ISREG(info.st_mode):
        return f"a {file_kind(info.st_mode)}, not an image file, a folder or a CSV"
    if path.suffix.lower() != ".csv" and path.suffix.lower() not in extensions:
        return f"not an image file (extensions {', '.join(extensions)}), a folder of images or a CSV of image paths"
    if not os.access(path, os.R_OK):
        return "a file that cannot be read (permission denied)"
    return None


#: The starter models ``ensemble-kit init`` writes: two different backbones that train from scratch
#: on a CPU in minutes (the demo's), so the generated project stacks for real from the first run.
STARTER_MODELS: dict[str, dict[str, Any]] = {
    "resnet10t": {"model": "resnet10t", "lr": 3e-3},
    "convnext": {"model": "test_convnext", "lr": 4e-3},
}


@dataclass(frozen=True)
class ImageProjectDraft:
    """What ``ensemble-kit init PROJECT.yaml --images DATA`` found, and what it writes (see
    :func:`image_project_yaml`). Paths are as the user gave them (relative to the working folder)."""

    store: str
    root: str
    train: str
    test: Optional[str]
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    n_test: int
    test_id_example: Optional[str]
    img_size: int
    image_side: Optional[int]          # typical short side of the training images, when read
    n_folds: int = 5
    seed: int = 0
    sample: Optional[str] = None       # the sample submission, when there is one
    sample_format: Optional[Literal["labels", "probs"]] = None
    id_col: str = "id"
    label_col: str = "label"
    sample_id_example: Optional[str] = None


def _scalar(value: Any) -> str:
    """One YAML scalar as it would be written (quoted only when it must be)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    return (text[:-5] if text.endswith("\n...\n") else text).strip()


def _commented(code: str, comment: str | None = None) -> str:
    """A YAML line with its comment at column 30 (or two spaces after a longer line)."""
    return code if not comment else f"{code.ljust(28)}  # {comment}"


def image_project_yaml(draft: ImageProjectDraft, *, cwd: str | Path) -> str:
    """The commented project YAML of an image project: every section says what it does and what to
    change. ``ProjectConfig.from_yaml`` reads it as it is (``ensemble-kit init`` checks that)."""
    from ensemble_kit.ensemble._recipes import RECIPES as recipes

    line = _commented
    n_train = sum(draft.counts)
    per_class = ", ".join(f"{c} {n}" for c, n in zip(draft.classes[:8], draft.counts[:8]))
    per_class += f", ... ({len(draft.classes)} classes)" if len(draft.classes) > 8 else ""
    if draft.sample_format == "probs":
        metric, why = "log_loss", "the sample submission holds one probability per class"
    elif draft.sample_format == "labels":
        metric, why = "accuracy", "the sample submission holds one label per image"
    else:
        metric, why = "log_loss", "no sample submission was given: set the competition's metric"
    test = (f"{draft.n_test} images (ids: file names without extension, e.g. {draft.test_id_example})" if draft.test
            else "no test folder (predict new images with `ensemble-kit predict`)")
    lines = [
        "# ensemble_kit image project, written by `ensemble-kit init`: every section says what to change.",
        "# Reference: docs/cli.md (project config), docs/training.md (a model's keys).",
        f"#   train: {len(draft.classes)} classes, {n_train} images ({per_class})",
        f"#   test:  {test}",
    ]
    if draft.sample is not None:
        shape = ("one probability column per class" if draft.sample_format == "probs"
                 else f"one label column {draft.label_col!r}")
        lines.append(f"#   sample submission: {draft.sample} (id column {draft.id_col!r}, {shape})")
    lines += [
        f"# Relative paths are relative to the folder ensemble-kit runs in (init ran in {cwd}).",
        "",
        line(f"store: {_scalar(draft.store)}", "the logit store: each fold's OOF and test logits (train creates it)"),
        "",
        line("data:", "where the images are"),
        line("  format: folder", "train: one folder per class (ImageFolder); test: a folder of images"),
        line(f"  root: {_scalar(draft.root)}", "train and test are inside it"),
        line(f"  train: {_scalar(draft.train)}", f"{len(draft.classes)} classes, {n_train} images"),
        line(f"  test: {_scalar(draft.test)}", f"{draft.n_test} images" if draft.test else
             "a folder of test images, when the competition gives one"),
        line("  cache: true", "keep decoded images in RAM (false when the images do not fit)"),
        "",
        line("folds:", "fixed once the store exists: other folds need a new store path"),
        line(f"  n_folds: {draft.n_folds}", "stratified; every class needs at least n_folds images"),
        f"  seed: {draft.seed}",
        "",
        "# Two starter backbones that train from scratch on a CPU in minutes, so a first run is quick and",
        "# the stack has two different models to combine. For real scores: pretrained backbones (model:",
        "# convnext_tiny, efficientnet_b0, ...; pretrained_path: local weights, nothing is downloaded),",
        "# img_size: 224, epochs: 20-30, on a GPU. Add models freely: each one is trained on every fold.",
        "models:",
    ]
    side = f"; the training images are about {draft.image_side} px" if draft.image_side else ""
    for index, (name, spec) in enumerate(STARTER_MODELS.items()):
        first = index == 0
        lines += [
            f"  {name}:",
            line(f"    model: {spec['model']}", "any timm model name" if first else None),
            line(f"    img_size: {draft.img_size}", f"input size in px{side}" if first else None),
            line("    epochs: 10", "a quick first run; 20-30 for a final one" if first else None),
            "    batch_size: 32",
            line("    device: auto", "cuda, then mps, then cpu" if first else None),
            f"    optimizer: {{name: adamw, lr: {spec['lr']}, weight_decay: 0.05}}",
            line("    augment: {random_resized_crop: true, crop_scale_min: 0.5, hflip: 0.5}",
                 "hflip: 0.0 when a mirrored image is another class" if first else None),
            line("    tta: {views: [identity, hflip]}",
                 "predictions average these views ([identity] without flips)" if first else None),
        ]
    lines += [
        "",
        line("stack:", "how the models' OOF logits are combined (`ensemble-kit stack`)"),
        line("  recipe: full", f"{' | '.join(recipes.names())} (docs/stacking.md)"),
        line(f"  metric: {metric}", f"{' | '.join(METRICS.names())}; {why}"),
        line("  n_trials: 50", "Optuna trials per tuned step (200 for a final run)"),
        f"  seed: {draft.seed}",
        "",
    ]
    if draft.sample is not None:
        kept = f"; its ids keep their extension ({draft.sample_id_example})" if draft.sample_id_example else ""
        lines += [
            "# What `ensemble-kit submit` writes without a sample submission. With --sample-submission (submit",
            f"# and predict) the sample's rows, id column and columns win{kept}.",
            "submission:",
            line(f"  format: {draft.sample_format}", "as the sample submission: " + (
                "one probability column per class" if draft.sample_format == "probs" else "one label column")),
            line(f"  id_col: {_scalar(draft.id_col)}", "its id column"),
            line(f"  label_col: {_scalar(draft.label_col)}",
                 "its label column" if draft.sample_format == "labels" else "(used by format: labels)"),
        ]
    else:
        lines += [
            "# What `ensemble-kit submit` writes (a --sample-submission CSV, when given, decides the layout).",
            "submission:",
            line("  format: auto", "auto (probabilities for log_loss, else labels) | labels | probs"),
            f"  id_col: {_scalar(draft.id_col)}",
            f"  label_col: {_scalar(draft.label_col)}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PretrainConfig:
    """``ensemble-kit pretrain CONFIG.yaml``: MAE pre-training on a project's images.

    ``data`` is a project's data section (its labels are never read); ``images: train+test``
    (default) uses the test images too. ``out`` receives ``encoder.safetensors``, which a
    model's ``pretrained_path`` then loads (its ``model``, ``img_size`` and ``model_kwargs``
    must be ``mae``'s).

    Examples
    --------
    >>> cfg = PretrainConfig.from_dict({"out": "mae", "mae": {"model": "vit_tiny_patch16_224", "img_size": 32}})
    >>> cfg.mae.img_size, cfg.images, cfg.data.format
    (32, 'train+test', 'digits')
    """

    out: str
    mae: MAEConfig
    data: DataConfig = field(default_factory=DataConfig)
    images: Literal["train", "train+test"] = "train+test"

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "images": self.images, "data": asdict(self.data), "mae": self.mae.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, *, overrides: Sequence[str] = ()) -> PretrainConfig:
        from ensemble_kit.train.config import MAEConfig

        if not isinstance(data, dict):
            raise ValidationError(f"A pretrain config must be a YAML mapping; got {type(data).__name__}.")
        data = copy.deepcopy(data)
        # absent keys hold their defaults, so an override can set any valid key (a typo gets a did-you-mean)
        for key, defaults in (("mae", MAEConfig().to_dict()), ("data", asdict(DataConfig()))):
            given = data.get(key)
            if given is None:
                given = {}
            if isinstance(given, dict):
                data[key] = {**defaults, **given}
        data.setdefault("images", "train+test")
        for assignment in overrides:
            set_dotted(data, assignment)
        unknown = sorted(set(data) - {"out", "mae", "data", "images"})
        if unknown:
            raise ValidationError(f"Unknown config key(s) {unknown}; valid top-level keys: ['data', 'images', 'mae', 'out'].")
        if not isinstance(data.get("out"), str) or not data["out"]:
            raise ValidationError("Config key 'out' must be the folder to write the encoder weights to (a string).")
        if data.get("images", "train+test") not in ("train", "train+test"):
            raise ValidationError(f"Config key 'images' must be 'train' or 'train+test'; got {data['images']!r}.")
        return cls(out=data["out"], mae=build_dataclass(MAEConfig, data["mae"], prefix="mae."),
                   data=build_dataclass(DataConfig, data["data"], prefix="data."),
                   images=data.get("images", "train+test"))

    @classmethod
    def from_yaml(cls, path: str | Path, *, overrides: Sequence[str] = ()) -> PretrainConfig:
        return _from_yaml(cls, path, overrides)


def _from_yaml(cls: Any, path: str | Path, overrides: Sequence[str]) -> Any:
    """``cls.from_dict`` of a YAML file; every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"Config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValidationError(f"Config file {str(path)!r} is not valid YAML: {exc}") from exc
    try:
        return cls.from_dict(data, overrides=overrides)
    except ValidationError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
