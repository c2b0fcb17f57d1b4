"""Images/s of train_cv for one fold against a plain hand-written timm loop, same run.

Both train the same timm model on the same images with the same data pipeline (the shared
TorchImageDataset + transforms, same batch size and loader settings) for the same number of
epochs; only the training loop differs. train_cv's figure is its training-only throughput (per
epoch validation, checkpoints and prediction excluded), as recorded in its history.csv.
Target: train_cv within 10 % of the plain loop (ratio >= 0.90).

    python benchmarks/trainer_overhead.py                     # CIFAR-10 JPEGs from ../shared
    python benchmarks/trainer_overhead.py --data synthetic
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from torch.utils.data import DataLoader, RandomSampler

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TorchImageDataset, build_train_transform
from ensemble_kit.train import TrainConfig, resolve_device, train_cv

sys.path.insert(0, str(Path(__file__).parent))


def _images(kind: str, n: int):
    if kind == "synthetic":
        rng = np.random.default_rng(0)
        return rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10
    from _cifar10 import load_cifar10

    data = load_cifar10()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data["train_labels"]), n, replace=False)
    return data["train_images"][pick], data["train_labels"][pick]


def plain_loop(cfg: TrainConfig, source: ArrayImageSource, indices: np.ndarray, device: torch.device) -> float:
    """The loop a user would write by hand: model, AdamW, CE, loader, backward, step."""
    torch.manual_seed(0)
    model = timm.create_model(cfg.model, pretrained=False, num_classes=10).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    dataset = TorchImageDataset(source, indices, build_train_transform(cfg.augment, img_size=cfg.img_size,
                                                                         mean=IMAGENET_MEAN, std=IMAGENET_STD))
    loss_fn = torch.nn.CrossEntropyLoss()
    seen, seconds = 0, 0.0
    for epoch in range(cfg.epochs):
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=RandomSampler(dataset), num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda")
        model.train()
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
    return seen / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["cifar10", "synthetic"], default="cifar10")
    parser.add_argument("--n", type=int, default=3000, help="images (5 folds: 80 %% train one fold)")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images, labels = _images(args.data, args.n)
    source = ArrayImageSource(images, labels, ids=[f"s{i}" for i in range(args.n)], classes=list(range(10)))
    cfg = TrainConfig.from_dict({"model": args.model, "img_size": 32, "epochs": args.epochs, "batch_size": args.batch_size,
                                 "device": args.device, "num_workers": args.workers, "amp": True,
                                 "augment": {"random_resized_crop": False, "hflip": 0.5}, "keep_checkpoints": 1})
    device = resolve_device(args.device)
    plain, ours = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            store = LogitStore.create(Path(tmp) / "s", source.ids, source.labels, list(range(10)), n_folds=5, seed=0)
            train_idx = np.flatnonzero(store.folds != 0)
            plain.append(plain_loop(cfg, source, train_idx, device))
            train_cv(cfg, store, source, None, name="bench", folds=[0])
            history = pd.read_csv(store.path / "runs" / "bench" / "fold0" / "history.csv")
            train_seconds = (len(train_idx) / history["train_images_per_second"]).sum()
            ours.append(len(train_idx) * args.epochs / train_seconds)
    med = statistics.median
    ratio = med(ours) / med(plain)
    print(f"device {device}, model {args.model}, {len(train_idx)} train images/fold x {args.epochs} epochs, "
          f"batch {args.batch_size}, workers {args.workers}, median of {args.repeats}")
    print(f"{'plain timm loop':<30}{med(plain):>10.1f} img/s")
    print(f"{'train_cv (one fold)':<30}{med(ours):>10.1f} img/s   ratio {ratio:.3f}  target >= 0.90  "
          f"{'OK' if ratio >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
