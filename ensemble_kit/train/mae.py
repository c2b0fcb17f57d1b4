"""Masked-autoencoder (MAE) pre-training of a timm ViT encoder on unlabelled images.

The Yandex solution pre-trains its from-scratch TinyViT this way before fine-tuning. No label
is read: training and test images may both be used. The encoder sees a random 25 % of each
image's patches (``mask_ratio=0.75``), a light decoder (``decoder_depth`` timm blocks) fills in
the rest, and the loss is the mean squared error on the (per-patch normalised) pixels of the
masked patches only (He et al., 2021). The run checkpoints every epoch (safetensors + JSON, as
the trainer) and resumes after a kill to identical weights. It writes ``encoder.safetensors``
in timm's key names, which :class:`~ensemble_kit.train.config.TrainConfig` ``pretrained_path``
loads for fine-tuning (every encoder tensor, or a named error).

Examples
--------
>>> import numpy as np, tempfile
>>> from ensemble_kit.data import ArrayImageSource
>>> images = ArrayImageSource(np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8))
>>> cfg = MAEConfig(model="vit_tiny_patch16_224", img_size=16, model_kwargs={"patch_size": 4, "depth": 1},
...                 epochs=1, batch_size=4, decoder_depth=1)
>>> result = pretrain_mae(cfg, images, tempfile.mkdtemp())
>>> result.encoder_path.name, len(result.history)
('encoder.safetensors', 1)
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ensemble_kit._progress import progress as progress_bar
from ensemble_kit.data.sources import ImageSource
from ensemble_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform
from ensemble_kit.errors import CheckpointError, ValidationError
from ensemble_kit.store._files import write_text
from ensemble_kit.store._paths import safe_dir
from ensemble_kit.train._rng import global_rng_state, isolated_global_rngs, set_global_rng_state
from ensemble_kit.train.checkpoint import list_checkpoints, load_checkpoint_state, prune_checkpoints, save_checkpoint_state
from ensemble_kit.train.config import AugmentConfig, MAEConfig, ScheduleConfig
from ensemble_kit.train.fold import schedule_steps
from ensemble_kit.train.models import build_model

logger = logging.getLogger(__name__)

__all__ = ["MAEConfig", "MAEResult", "pretrain_mae"]

ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "mae_config.yaml"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class MAEResult:
    """What a pre-training run wrote: the encoder weights, the resolved config and the loss per epoch."""

    encoder_path: Path
    config_path: Path
    history: list[dict[str, float]] = field(default_factory=list)


class _UnlabelledImages(Dataset):
    """The images of several sources, one after another, transformed; labels are never read."""

    def __init__(self, sources: list[ImageSource], transform: Any) -> None:
        self.sources, self.transform = sources, transform
        self.starts = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        which = int(np.searchsorted(self.starts, item, side="right")) - 1
        return self.transform(self.sources[which].load(item - int(self.starts[which]))), -1


class MaskedAutoencoder(nn.Module):
    """A timm ``VisionTransformer`` encoder with random patch masking and a light decoder."""

    def __init__(self, encoder: nn.Module, *, decoder_dim: int, decoder_depth: int, decoder_heads: int,
                 norm_pix_loss: bool) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        self.encoder = encoder
        patch = encoder.patch_embed.patch_size
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.grid = tuple(encoder.patch_embed.grid_size)
        n_patches = self.grid[0] * self.grid[1]
        self.norm_pix_loss = norm_pix_loss
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, n_patches, decoder_dim))
        self.decoder_blocks = nn.Sequential(*[Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                              for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size[0] * self.patch_size[1] * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_pos, std=0.02)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, patches, ph * pw * 3)`` in the patch embedding's row-major order."""
        (ph, pw), (gh, gw) = self.patch_size, self.grid
        x = images.reshape(images.shape[0], 3, gh, ph, gw, pw)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(images.shape[0], gh * gw, ph * pw * 3)

    def forward(self, images: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss on the masked patches, and the mask (1: masked) of every patch."""
        enc = self.encoder
        tokens = enc._pos_embed(enc.patch_embed(images))  # prefix (class) tokens, then one per patch
        prefix = enc.num_prefix_tokens
        patches = tokens[:, prefix:]
        n, length, dim = patches.shape
        n_keep = max(1, int(round(length * (1 - mask_ratio))))
        order = torch.argsort(torch.rand(n, length, device=images.device), dim=1)
        restore = torch.argsort(order, dim=1)
        keep = order[:, :n_keep]
        kept = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, dim))
        x = torch.cat([tokens[:, :prefix], kept], dim=1)
        x = enc.norm(enc.blocks(enc.norm_pre(enc.patch_drop(x))))
        x = self.decoder_embed(x[:, prefix:])
        filled = torch.cat([x, self.mask_token.expand(n, length - n_keep, -1)], dim=1)
        filled = torch.gather(filled, 1, restore.unsqueeze(-1).expand(-1, -1, filled.shape[-1])) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(filled)))
        target = self.patchify(images)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        mask = torch.ones(n, length, device=images.device)
        mask[:, :n_keep] = 0
        mask = torch.gather(mask, 1, restore)
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum(), mask


def build_encoder(cfg: MAEConfig) -> nn.Module:
    """The ViT encoder, built by the fine-tune's own ``build_model``, without a head."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(cfg.model):
        raise ValidationError(f"Config key 'model': unknown timm model {cfg.model!r} (see timm.list_models('vit*')).")
    encoder = build_model(cfg.model, num_classes=0, img_size=cfg.img_size, model_kwargs=cfg.model_kwargs)
    if not isinstance(encoder, VisionTransformer):
        raise ValidationError(f"Config key 'model': MAE pre-trains a ViT-style timm encoder (a VisionTransformer: "
                              f"vit_*, deit_*, ...); {cfg.model!r} is a {type(encoder).__name__}.")
    return encoder


def pretrain_mae(cfg: MAEConfig, images: ImageSource | Sequence[ImageSource], out_dir: str | Path) -> MAEResult:
    """Pre-train ``cfg.model`` as a masked autoencoder on ``images``; resume from ``out_dir`` if it was killed.

    Parameters
    ----------
    cfg : MAEConfig
    images : ImageSource or sequence of ImageSource
        Unlabelled images (labels, if any, are never read): training and test images alike.
    out_dir : path
        Receives ``encoder.safetensors``, ``mae_config.yaml``, ``history.csv`` and
        ``checkpoints/``. A run with another config in the same folder is refused.

    Returns
    -------
    MAEResult
    """
    from timm.optim import create_optimizer_v2

    from ensemble_kit.train.trainer import resolve_device

    sources = [images] if isinstance(images, ImageSource) else list(images)
    if not sources or not all(isinstance(s, ImageSource) for s in sources):
        raise ValidationError("images must be an ImageSource or a non-empty sequence of them.")
    augment = AugmentConfig(random_resized_crop=True, crop_scale_min=cfg.crop_scale_min, hflip=cfg.hflip)
    dataset = _UnlabelledImages(sources, build_train_transform(augment, img_size=cfg.img_size, mean=IMAGENET_MEAN,
                                                               std=IMAGENET_STD))
    if len(dataset) < 1:
        raise ValidationError("images is empty: MAE pre-training needs at least one image.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = safe_dir(out, CHECKPOINT_DIR, create=True)
    device = resolve_device(cfg.device)
    if cfg.cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    with isolated_global_rngs(cfg.seed):
        model = MaskedAutoencoder(build_encoder(cfg), decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                                  decoder_heads=cfg.decoder_heads, norm_pix_loss=cfg.norm_pix_loss).to(device)
        optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = schedule_steps(optimizer, ScheduleConfig(name="cosine", warmup_epochs=cfg.warmup_epochs,
                                                             min_lr=cfg.min_lr),
                                   lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
        use_amp = cfg.amp and device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        start_epoch, history = _resume(checkpoints, cfg, model, optimizer, scheduler, scaler, device)
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                                pin_memory=device.type == "cuda", drop_last=len(dataset) >= 2 * cfg.batch_size)
            model.train()
            total, seen = 0.0, 0
            for batch, _ in progress_bar(loader, desc=f"MAE epoch {epoch + 1}/{cfg.epochs}", leave=False):
                batch = batch.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss, _mask = model(batch, cfg.mask_ratio)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
            row = {"epoch": epoch, "loss": total / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - started}
            history.append(row)
            logger.info("MAE epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, row["loss"])
            save_checkpoint_state(checkpoints / f"epoch_{epoch:04d}", {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": global_rng_state(),
                "history": history, "config": cfg.to_dict()})
            prune_checkpoints(checkpoints, keep=cfg.keep_checkpoints)
    return _write_outputs(out, cfg, model, history)


def _resume(checkpoints: Path, cfg: MAEConfig, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
            device: torch.device) -> tuple[int, list[dict[str, float]]]:
    found = list_checkpoints(checkpoints)
    if not found:
        return 0, []
    path = found[-1]
    state = load_checkpoint_state(path, map_location=device)
    if state.get("config") != cfg.to_dict():
        raise ValidationError(f"MAE checkpoint {str(path)!r} was written with a different config; use another "
                              f"output folder, or remove {str(checkpoints)!r} to start afresh.")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_global_rng_state(state["rng"])
        epoch, history = int(state["epoch"]) + 1, [dict(row) for row in state["history"]]
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"MAE checkpoint {str(path)!r} does not fit this model ({type(exc).__name__}: {exc}); "
                              f"remove {str(checkpoints)!r} to start afresh.") from exc
    logger.info("MAE: resumed after epoch %d", epoch)
    return epoch, history


def _write_outputs(out: Path, cfg: MAEConfig, model: MaskedAutoencoder, history: list[dict[str, float]]) -> MAEResult:
    from safetensors.torch import save_file

    encoder_path = out / ENCODER_FILE
    staging = out / f".{ENCODER_FILE}.writing"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}, str(staging))
    staging.replace(encoder_path)
    config_path = write_text(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with (out / HISTORY_FILE).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "loss", "lr", "seconds"])
        writer.writeheader()
        writer.writerows(history)
    return MAEResult(encoder_path=encoder_path, config_path=config_path, history=list(history))
