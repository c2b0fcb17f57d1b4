"""Throughput of ``Predictor.predict_logits`` against a plain timm eval loop, in one process.

One timm model x 5 fold models x 3 TTA views (identity, hflip, scale1.15) over the same image
files. The baseline is what one would write by hand: a DataLoader applying the trainer's eval
transform to each image, then every fold model on every view of each batch, averaged. Both
decode the same files; they are run alternately (``--repeats`` each) and the medians compared.
Target: the Predictor at >= 0.9x the baseline's images/s. Fold models are exported with random
weights (throughput does not depend on what they learned).

    python benchmarks/predict_throughput.py                       # CPU, 2,000 CIFAR-10 test JPEGs
    python benchmarks/predict_throughput.py --device cuda --images 10000 --model resnet50 --size 224
"""

from __future__ import annotations

import argparse
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ensemble_kit.data.sources import ImagePathSource
from ensemble_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TorchImageDataset, build_eval_transform
from ensemble_kit.project.predict import Predictor
from ensemble_kit.train import TrainConfig, TTAConfig
from ensemble_kit.train.export import export_fold_model
from ensemble_kit.train.models import build_model
from ensemble_kit.train.tta import predict_views

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
VIEWS = ("identity", "hflip", "scale1.15")


def _images(folder: Path, n: int) -> list[Path]:
    """``n`` CIFAR-10 test JPEGs from ../shared/data (or generated PNGs when it is not there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if CIFAR.is_file():
        with tarfile.open(CIFAR) as archive:
            members = [m for m in archive if m.isfile() and "/test/" in f"/{m.name}" and m.name.endswith(".jpg")][:n]
            for i, member in enumerate(members):
                (folder / f"{i:05d}.jpg").write_bytes(archive.extractfile(member).read())
    else:
        from PIL import Image

        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return sorted(folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="predict_bench_"))
    paths = _images(work / "images", args.images)
    cfg = TrainConfig(model=args.model, img_size=args.size, batch_size=args.batch_size // 2, device=args.device,
                      tta=TTAConfig(views=VIEWS))
    classes = list(range(10))
    folders = []
    for k in range(args.folds):
        torch.manual_seed(k)
        model = build_model(args.model, num_classes=10, img_size=args.size).eval()
        folders.append(export_fold_model(work / f"fold{k}", model, config=cfg, classes=classes, fold=k,
                                         mean=IMAGENET_MEAN, std=IMAGENET_STD))
    predictor = Predictor({args.model: folders}, stack=None, classes=classes, device=args.device,
                          batch_size=args.batch_size)
    source = ImagePathSource(paths)

    baseline_models = [fold.model for fold in predictor.models[0].folds]
    transform = build_eval_transform(img_size=args.size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    use_amp = device.type == "cuda"

    @torch.no_grad()
    def plain_loop() -> np.ndarray:
        loader = DataLoader(TorchImageDataset(source, np.arange(len(source)), transform), batch_size=args.batch_size,
                            shuffle=False, pin_memory=use_amp)
        out = []
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if use_amp:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out.append(torch.stack([predict_views(m, images, VIEWS).float().mean(0) for m in baseline_models])
                           .mean(0).cpu())
        return torch.cat(out).numpy()

    def predictor_run() -> np.ndarray:
        return predictor.predict_logits(source)[args.model]

    np.testing.assert_allclose(predictor_run(), plain_loop(), atol=1e-4)  # the same computation
    times = {"plain timm loop": [], "Predictor": []}
    for _ in range(args.repeats):
        for label, run in (("plain timm loop", plain_loop), ("Predictor", predictor_run)):
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    rate = {label: len(source) / statistics.median(t) for label, t in times.items()}
    ratio = rate["Predictor"] / rate["plain timm loop"]
    print(f"{len(source):,} images, {args.model} at {args.size} px x {args.folds} folds x {len(VIEWS)} views, "
          f"batch {args.batch_size}, device {device}, median of {args.repeats}")
    for label, value in rate.items():
        print(f"  {label:<18} {value:>9.1f} images/s")
    print(f"  ratio {ratio:.3f} (target >= 0.9): {'OK' if ratio >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
