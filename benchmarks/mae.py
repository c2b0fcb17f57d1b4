"""MAE pre-training against training from scratch, same ViT, same fine-tune budget (issue 16, part 3).

A CIFAR-10 subset at 32 px (``--train-per-class`` training and ``--test-per-class`` held-out
test images per class from ``../shared/data/cifar10-jpg.tar.gz``). Arm (a): the ViT fine-tuned
from random init. Arm (b): the same ViT pre-trained with :func:`ensemble_kit.train.pretrain_mae`
on the training and test images (no labels read), then fine-tuned with the same optimiser,
schedule and epochs (loaded through ``pretrained_path``). Held-out test labels are only used to
score. Prints accuracy, log loss and the cost (seconds) of each part.

    python benchmarks/mae.py                        # CPU-sized default
    python benchmarks/mae.py --train-per-class 1000 --mae-epochs 100 --epochs 30 --depth 12 --device cuda
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ensemble_kit.data import ArrayImageSource
from ensemble_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TorchImageDataset, build_eval_transform, \
    build_train_transform
from ensemble_kit.metrics import accuracy, log_loss
from ensemble_kit.train import AugmentConfig, MAEConfig, build_model, pretrain_mae

DEFAULT_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def load_subset(tar_path: Path, per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first ``per_class[split]`` JPEGs of every class of each split, decoded to (N, 32, 32, 3) uint8."""
    found: dict[str, dict[str, list[np.ndarray]]] = {split: {} for split in per_class}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            split, label = parts[0], parts[1]
            images = found[split].setdefault(label, [])
            if len(images) < per_class[split]:
                data = tar.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    classes = sorted(found["train"])
    out = {}
    for split, by_class in found.items():
        images = [img for c in classes for img in by_class[c]]
        labels = [k for k, c in enumerate(classes) for _ in by_class[c]]
        out[split] = (np.stack(images), np.asarray(labels))
    return out


def fine_tune(model: torch.nn.Module, train: ArrayImageSource, test: ArrayImageSource, *, epochs: int,
              batch_size: int, lr: float, seed: int, device: str) -> tuple[np.ndarray, float]:
    """AdamW + warmup/cosine fine-tune; test logits and seconds."""
    torch.manual_seed(seed)
    augment = AugmentConfig(random_resized_crop=True, crop_scale_min=0.6, hflip=0.5)
    train_ds = TorchImageDataset(train, np.arange(len(train)), build_train_transform(
        augment, img_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    test_ds = TorchImageDataset(test, np.arange(len(test)), build_eval_transform(
        img_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(train_ds) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        model.train()
        for images, targets in loader:
            loss = torch.nn.functional.cross_entropy(model(images.to(device)), targets.to(device),
                                                     label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x.to(device)).float().cpu() for x, _ in DataLoader(test_ds, batch_size=256)])
    return logits.numpy(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--depth", type=int, default=4, help="ViT blocks (ViT-tiny: 12; width 192, 3 heads)")
    parser.add_argument("--mae-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tune epochs of both arms")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    started = time.perf_counter()
    data = load_subset(args.tar, {"train": args.train_per_class, "test": args.test_per_class})
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    train, test = ArrayImageSource(x_train, y_train), ArrayImageSource(x_test, y_test)
    print(f"CIFAR-10 subset: {len(train)} train, {len(test)} held-out test images at 32 px "
          f"(loaded in {time.perf_counter() - started:.1f} s)")
    kwargs = {"patch_size": 4, "depth": args.depth}
    vit = dict(model="vit_tiny_patch16_224", img_size=32, model_kwargs=kwargs)

    torch.manual_seed(args.seed)  # the random init (and the pre-trained arm's new head) is seeded too
    scratch = build_model(vit["model"], num_classes=10, img_size=32, model_kwargs=kwargs)
    scratch_logits, scratch_s = fine_tune(scratch, train, test, epochs=args.epochs, batch_size=args.batch_size,
                                          lr=args.lr, seed=args.seed, device=args.device)

    with tempfile.TemporaryDirectory() as out:
        cfg = MAEConfig(**vit, epochs=args.mae_epochs, batch_size=args.batch_size, lr=1.5e-3, warmup_epochs=1,
                        device=args.device, seed=args.seed)
        mae_started = time.perf_counter()
        # training and test images, no labels: what the Yandex solution pre-trains on
        result = pretrain_mae(cfg, [ArrayImageSource(x_train), ArrayImageSource(x_test)], out)
        mae_s = time.perf_counter() - mae_started
        torch.manual_seed(args.seed)
        pretrained = build_model(vit["model"], num_classes=10, img_size=32, model_kwargs=kwargs,
                                 pretrained_path=str(result.encoder_path))
    mae_logits, mae_ft_s = fine_tune(pretrained, train, test, epochs=args.epochs, batch_size=args.batch_size,
                                     lr=args.lr, seed=args.seed, device=args.device)

    n_params = sum(p.numel() for p in scratch.parameters())
    print(f"ViT: width 192, depth {args.depth}, patch 4 (64 tokens), {n_params / 1e6:.2f} M parameters; "
          f"fine-tune {args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr:g}, one-cycle")
    print(f"MAE: {args.mae_epochs} epochs on {len(train) + len(test)} images, mask 0.75, loss "
          f"{result.history[0]['loss']:.4f} -> {result.history[-1]['loss']:.4f}, {mae_s:.0f} s")
    print(f"\n| arm | test accuracy | test log loss | fine-tune s | pre-train s |")
    print("| --- | --- | --- | --- | --- |")
    for name, logits, ft_s, pre_s in (("from scratch", scratch_logits, scratch_s, 0.0),
                                      ("MAE pre-trained", mae_logits, mae_ft_s, mae_s)):
        print(f"| {name} | {accuracy(y_test, logits, kind='logits'):.4f} | "
              f"{log_loss(y_test, logits, kind='logits'):.4f} | {ft_s:.0f} | {pre_s:.0f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
