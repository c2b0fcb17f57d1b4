"""Train/eval transforms: albumentations pipelines on arrays, then torchvision v2 on tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ensemble_kit._registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def aoi_albumentations(img_size: int) -> Any:
    """The AOI champion's set: Affine, blur-or-sharpen, CoarseDropout, colour jitter."""
    import albumentations as A

    hole = max(1, img_size // 10)
    return A.Compose([
        A.Affine(rotate=(-30, 30), scale=(0.85, 1.15), p=0.5),
        # "dual-stream simulation": blur one time, sharpen another, never both
        A.OneOf([A.Blur(blur_limit=3, p=1.0), A.Sharpen(alpha=(0.2, 0.5), p=1.0)], p=0.3),
        A.CoarseDropout(num_holes_range=(8, 8), hole_height_range=(hole, hole), hole_width_range=(hole, hole), p=0.5),
        A.OneOf([A.HueSaturationValue(hue_shift_limit=0.2 * 180, sat_shift_limit=0.2 * 255, val_shift_limit=0.2 * 255, p=1.0),
                 A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0)], p=0.5),
    ])


#: torchvision auto-augment policies, ``augment.policy``: ``factory(augment_config) -> transform``.
AUGMENT_POLICIES: Registry[Callable[[Any], Any]] = Registry("augmentation policy")
#: albumentations pipelines, ``augment.albumentations``: ``factory(img_size) -> A.Compose``.
ALBUMENTATIONS: Registry[Callable[[int], Any]] = Registry("albumentations pipeline")


def register_policy(name: str, factory: Callable[[Any], Any] | None = None, *, replace: bool = False) -> Any:
    """Register ``factory(augment_config) -> torchvision v2 transform`` as ``augment.policy: name``."""
    return AUGMENT_POLICIES.register(name, factory, replace=replace)


@register_policy("trivial")
def _trivial(augment: Any) -> Any:
    """TrivialAugmentWide (Müller & Hutter, 2021): one random op at a random strength."""
    return v2.TrivialAugmentWide()


@register_policy("randaugment")
def _randaugment(augment: Any) -> Any:
    """RandAugment with randaugment_n ops at magnitude randaugment_m."""
    return v2.RandAugment(num_ops=augment.randaugment_n, magnitude=augment.randaugment_m)


@register_policy("autoaugment")
def _autoaugment(augment: Any) -> Any:
    """AutoAugment's ImageNet policy."""
    return v2.AutoAugment()


ALBUMENTATIONS.register("aoi", aoi_albumentations)


def build_train_transform(augment: Any, *, img_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """``augment`` is an :class:`~ensemble_kit.train.config.AugmentConfig`."""
    album = ALBUMENTATIONS.get(augment.albumentations)(img_size) if augment.albumentations else None
    steps: list[Any] = []
    if augment.random_resized_crop:
        steps.append(v2.RandomResizedCrop(img_size, scale=(augment.crop_scale_min, 1.0), antialias=True))
    else:
        steps.append(v2.Resize((img_size, img_size), antialias=True))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip(augment.hflip))
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip(augment.vflip))
    if augment.policy:
        steps.append(AUGMENT_POLICIES.get(augment.policy)(augment))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment.random_erasing:
        steps.append(v2.RandomErasing(p=augment.random_erasing))
    tensor_steps = v2.Compose(steps)

    def transform(image: NDArray[np.uint8]) -> torch.Tensor:
        if album is not None:
            # albumentations keeps its own generators; drawing their seed from torch's RNG makes
            # them follow torch's per-worker seeding and the RNG state saved in checkpoints.
            album.set_random_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
            image = album(image=image)["image"]
        return tensor_steps(_chw_tensor(image))

    return transform


def build_eval_transform(*, img_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    steps = v2.Compose([v2.Resize((img_size, img_size), antialias=True), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(list(mean), list(std))])
    return lambda image: steps(_chw_tensor(image))


def dataset_mean_std(source: Any, indices: NDArray, *, max_images: int = 2000, seed: int = 0) -> tuple[tuple, tuple]:
    """Per-channel mean/std of (a sample of) the training images, in [0, 1] units."""
    rng = np.random.default_rng(seed)
    chosen = indices if len(indices) <= max_images else rng.choice(indices, max_images, replace=False)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i in chosen:
        pixels = source.load(int(i)).reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return tuple(mean.tolist()), tuple(std.tolist())


class TorchImageDataset(Dataset):
    """Rows ``indices`` of a source, transformed, with class-index targets (-1 where unlabelled)."""

    def __init__(self, source: Any, indices: NDArray, transform: Callable, targets: NDArray | None = None) -> None:
        self.source, self.indices, self.transform = source, np.asarray(indices), transform
        if targets is None and source.targets is not None:
            targets = source.targets[self.indices]
        self.targets = targets

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        image = self.source.load(int(self.indices[item]))
        target = int(self.targets[item]) if self.targets is not None else -1
        return self.transform(image), target


def _chw_tensor(image: NDArray[np.uint8]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` tensor; read-only (cached, shared) arrays are copied, never aliased."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(image).permute(2, 0, 1)
