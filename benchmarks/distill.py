"""Distilling the stored ensemble into one student, against the same student on hard labels (issue 16, part 2).

A CIFAR-10 JPEG subset at 32 px from ``../shared/data/cifar10-jpg.tar.gz`` (``--train-per-class``
training images in a store with ``--folds`` stratified folds; ``--test-per-class`` held-out test
images whose labels only score). Teachers (``--teachers``) are trained fold by fold with
``train_cv``; the student architecture is then trained twice with the same config and epochs:
(a) on hard labels, (b) with ``distill`` from the teachers (soft targets of fold ``k`` from the
teachers' fold-``k`` models: ``distill_targets_by_fold``). Prints honest OOF and held-out test
log loss / accuracy of both, the teachers' ensemble (mean of probabilities) and the inference
cost (images/s through ``Predictor``: every fold model, its TTA views).

    python benchmarks/distill.py                  # CPU-sized default (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mae import DEFAULT_TAR, load_subset  # noqa: E402  (the benchmark next door reads the same subset)

from ensemble_kit import LogitStore  # noqa: E402
from ensemble_kit.data import ArrayImageSource  # noqa: E402
from ensemble_kit.metrics import accuracy, log_loss, softmax  # noqa: E402
from ensemble_kit.project import distill_targets_by_fold  # noqa: E402
from ensemble_kit.project.predict import Predictor  # noqa: E402
from ensemble_kit.train import TrainConfig, train_cv  # noqa: E402
from ensemble_kit.train.export import EXPORT_DIR  # noqa: E402

COMMON = {"img_size": 32, "batch_size": 64, "device": "cpu", "cpu_threads": 2, "seed": 0,
          "optimizer": {"lr": 0.003, "weight_decay": 0.05}, "schedule": {"warmup_epochs": 1.0},
          "augment": {"crop_scale_min": 0.6}, "tta": {"views": ["identity", "hflip"]}}


def _scores(y: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    return log_loss(y, logits, kind="logits"), accuracy(y, logits, kind="logits")


def _images_per_second(store: LogitStore, names: list[str], images: ArrayImageSource) -> float:
    """Through every fold model of ``names`` (one at a time: no stack needed), TTA included."""
    seconds = 0.0
    for name in names:
        folders = [store.workspace.fold_dir(name, k) / EXPORT_DIR for k in range(store.n_folds)]
        predictor = Predictor({name: folders}, stack=None, classes=store.classes, device="cpu", batch_size=256)
        start = time.perf_counter()
        predictor.predict_logits(images)
        seconds += time.perf_counter() - start
    return len(images) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--unlabeled-per-class", type=int, default=200,
                        help="further training JPEGs per class used without their labels as extra distillation "
                             "data (0: none)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--teachers", default="resnet10t,plain_cnn", help="comma-separated models")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student", default="test_resnet")
    parser.add_argument("--epochs", type=int, default=10, help="student epochs (both arms)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args()

    started = time.perf_counter()
    per_class = args.train_per_class + args.unlabeled_per_class
    data = load_subset(args.tar, {"train": per_class, "test": args.test_per_class})
    (x_all, y_all), (x_test, y_test) = data["train"], data["test"]
    labelled = np.arange(len(y_all)) % per_class < args.train_per_class  # classes come in blocks of per_class
    x_train, y_train = x_all[labelled], y_all[labelled]
    extra = None  # the rest of each class: images only, their labels are dropped here
    if args.unlabeled_per_class:
        extra = ArrayImageSource(x_all[~labelled], ids=[f"u{i}" for i in range(int((~labelled).sum()))],
                                 classes=list(range(10)))
    train = ArrayImageSource(x_train, y_train, ids=[f"r{i}" for i in range(len(y_train))], classes=list(range(10)))
    test = ArrayImageSource(x_test, ids=[f"t{i}" for i in range(len(y_test))], classes=list(range(10)))
    print(f"CIFAR-10 subset: {len(train)} training images ({args.folds} folds), {len(test)} held-out test images, "
          f"{0 if extra is None else len(extra)} unlabelled images, 32 px (loaded in {time.perf_counter() - started:.1f} s)")
    teachers = args.teachers.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LogitStore.create(Path(tmp) / "store", train.ids, y_train, list(range(10)), n_folds=args.folds, seed=0,
                                  test_ids=test.ids)
        fit_seconds = {}
        for name in teachers:
            t0 = time.perf_counter()
            train_cv(TrainConfig.from_dict({**COMMON, "model": name, "epochs": args.teacher_epochs}), store, train,
                     test, name=name)
            fit_seconds[name] = time.perf_counter() - t0
        student = {**COMMON, "model": args.student, "epochs": args.epochs}
        t0 = time.perf_counter()
        train_cv(TrainConfig.from_dict(student), store, train, test, name="student_hard")
        fit_seconds["student_hard"] = time.perf_counter() - t0
        distilled_cfg = TrainConfig.from_dict({**student, "distill": {"alpha": args.alpha,
                                                                      "temperature": args.temperature}})
        arms = ["student_hard"]
        for arm, unlabeled in (("student_distilled", None), ("student_distilled+unlabelled", extra)):
            if arm.endswith("unlabelled") and unlabeled is None:
                continue
            t0 = time.perf_counter()
            soft = distill_targets_by_fold(store, teachers, train, temperature=args.temperature, unlabeled=unlabeled,
                                           device="cpu")
            train_cv(distilled_cfg, store, train, test, name=arm, soft_targets=soft)
            fit_seconds[arm] = time.perf_counter() - t0
            arms.append(arm)

        def probs_of(names: list[str], split: str) -> np.ndarray:
            get = store.oof if split == "oof" else store.test
            return np.mean([softmax(get(n)) for n in names], axis=0)

        for name in teachers:
            rows.append((f"teacher {name}", *_scores(y_train, store.oof(name)), *_scores(y_test, store.test(name)),
                         fit_seconds[name], _images_per_second(store, [name], test)))
        ensemble_oof, ensemble_test = np.log(probs_of(teachers, "oof")), np.log(probs_of(teachers, "test"))
        rows.append(("ensemble (mean of teachers' probabilities)", *_scores(y_train, ensemble_oof),
                     *_scores(y_test, ensemble_test), sum(fit_seconds[t] for t in teachers),
                     _images_per_second(store, teachers, test)))
        for name in arms:
            rows.append((f"{args.student} {name.split('_', 1)[1]}", *_scores(y_train, store.oof(name)),
                         *_scores(y_test, store.test(name)), fit_seconds[name], _images_per_second(store, [name], test)))

    print(f"teachers: {teachers}, {args.teacher_epochs} epochs; student {args.student}, {args.epochs} epochs; "
          f"distill alpha {args.alpha}, temperature {args.temperature}; TTA identity + hflip, {args.folds} folds")
    print("\n| model | OOF log loss | OOF accuracy | test log loss | test accuracy | fit s | inference images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, oll, oacc, tll, tacc, fit, ips in rows:
        print(f"| {name} | {oll:.4f} | {oacc:.4f} | {tll:.4f} | {tacc:.4f} | {fit:.0f} | {ips:.0f} |")
    hard = rows[-len(arms)]
    for distilled in rows[-len(arms) + 1:]:
        verdict = "beats" if distilled[3] < hard[3] else "does NOT beat"
        print(f"{distilled[0]} {verdict} the hard-label student on held-out test log loss "
              f"({distilled[3]:.4f} vs {hard[3]:.4f})")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
