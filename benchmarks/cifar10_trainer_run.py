"""CIFAR-10 with the trainer: several small timm backbones x 5 folds into one store (CPU-sized).

Uses a stratified subset of the CIFAR-10 JPEG training images (``--n-train``) with 5 folds and
a subset of the official test images as the test set; prints accuracy per model (OOF and
held-out test) and wall time, then the store's leaderboard.

    python benchmarks/cifar10_trainer_run.py --out /tmp/cifar10-trainer
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.train import TrainConfig, train_cv

sys.path.insert(0, str(Path(__file__).parent))
from _cifar10 import load_cifar10  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cifar10-trainer"))
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--models", default="resnet10t,mobilenetv3_small_100,regnetx_002")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    data = load_cifar10()
    train_pick, _ = train_test_split(np.arange(len(data["train_labels"])), train_size=args.n_train,
                                     stratify=data["train_labels"], random_state=0)
    test_pick, _ = train_test_split(np.arange(len(data["test_labels"])), train_size=args.n_test,
                                    stratify=data["test_labels"], random_state=0)
    classes = data["classes"].tolist()
    train = ArrayImageSource(data["train_images"][train_pick], data["train_labels"][train_pick],
                             ids=data["train_ids"][train_pick], classes=list(range(10)))
    test = ArrayImageSource(data["test_images"][test_pick], ids=data["test_ids"][test_pick], classes=list(range(10)))
    y_test = data["test_labels"][test_pick]
    if args.out.exists():
        shutil.rmtree(args.out)
    store = LogitStore.create(args.out, train.ids, train.labels, list(range(10)), n_folds=5, seed=0, test_ids=test.ids)
    print(f"{len(train)} train / {len(test)} test images, classes {classes}")
    rows = []
    for model in args.models.split(","):
        cfg = TrainConfig.from_dict({
            "model": model, "img_size": 32, "epochs": args.epochs, "batch_size": 64, "device": args.device,
            "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05, "clip_grad_norm": 1.0},
            "schedule": {"name": "cosine", "warmup_epochs": 0.5},
            "augment": {"random_resized_crop": True, "crop_scale_min": 0.7, "hflip": 0.5},
            "regularization": {"label_smoothing": 0.1},
            "tta": {"views": ["identity", "hflip"]},
        })
        start = time.perf_counter()
        train_cv(cfg, store, train, test, name=model)
        seconds = time.perf_counter() - start
        oof_acc = float(np.mean(store.oof(model).argmax(1) == store.y))
        test_acc = float(np.mean(store.test(model).argmax(1) == y_test))
        ips = np.mean([m["train_images_per_second"] for m in store.entry(model).fold_meta.values()])
        rows.append((model, oof_acc, test_acc, seconds, ips))
        print(f"{model:<24} OOF acc {oof_acc:.4f}  test acc {test_acc:.4f}  wall {seconds:7.1f}s  train {ips:6.1f} img/s",
              flush=True)
    np.save(args.out.parent / f"{args.out.name}-test-labels.npy", y_test)
    print(store.leaderboard().iloc[:, :4].to_string(index=False))


if __name__ == "__main__":
    main()
