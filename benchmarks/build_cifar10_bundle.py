"""Build a real OOF/test logit bundle on CIFAR-10 into a LogitStore (CPU, ~1.5 h on 2 cores).

Seven diverse base models, 5 stratified folds over the 50,000 training images, test logits on
the 10,000 CIFAR-10 test images (held out: their labels are saved beside the store, never
used for fitting). Model families are chosen to be affordable on a 2-core CPU and to differ in
accuracy and calibration, which is what stacking has to handle:

- cnn_small / cnn_tiny: small from-scratch CNNs (torch; widths 24 and 16, 6 and 4 epochs), flips + shifts
- cnn_small_s1 / cnn_mid (optional, ``--models``): another seed of cnn_small, and width 20 x 5 epochs
- lgbm_pixels: LightGBM on 8x8 RGB thumbnails + colour statistics
- logreg_pixels: multinomial logistic regression on 16x16 RGB pixels
- knn_pca: k-nearest neighbours on 64 PCA components (poorly calibrated on purpose)
- rff_logreg: logistic regression on random Fourier features of the PCA components
- extra_trees: extremely randomised trees on 8x8 thumbnails

    python benchmarks/build_cifar10_bundle.py --out /tmp/cifar10-store
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ensemble_kit import LogitStore

from _cifar10 import load_cifar10

log = logging.getLogger("bundle")


def _thumbs(images: np.ndarray, size: int) -> np.ndarray:
    n = len(images)
    f = 32 // size
    small = images.reshape(n, size, f, size, f, 3).mean(axis=(2, 4))
    return (small / 255.0).reshape(n, -1).astype(np.float32)


def _features(images: np.ndarray) -> dict[str, np.ndarray]:
    x8 = _thumbs(images, 8)
    stats = np.concatenate([images.reshape(len(images), -1, 3).mean(1), images.reshape(len(images), -1, 3).std(1)], 1) / 255.0
    return {"x8": np.concatenate([x8, stats.astype(np.float32)], 1), "x16": _thumbs(images, 16)}


def _cnn(width: int, n_classes: int = 10) -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))
    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_classes))


def _train_cnn(width, epochs, seed, x_fit, y_fit, predict_sets, n_classes=10):
    torch.manual_seed(seed)
    model = _cnn(width, n_classes).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * ((len(x_fit) + 255) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.25)
    mean = torch.tensor([0.491, 0.482, 0.447]).view(1, 3, 1, 1)
    std = torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
    xt = torch.from_numpy(x_fit).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    yt = torch.from_numpy(y_fit)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 256):
            idx = order[start:start + 256]
            xb = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            dx, dy = torch.randint(-3, 4, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(model(xb.contiguous(memory_format=torch.channels_last)), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    outs = []
    with torch.no_grad():
        for x in predict_sets:
            xe = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
            logits = [model(xe[i:i + 1024]) + model(xe[i:i + 1024].flip(3)) for i in range(0, len(xe), 1024)]
            outs.append((torch.cat(logits) / 2).numpy())
    return outs


# name -> (width, epochs, seed offset): same-family CNNs with different seeds and widths are what
# a real bundle of several trained backbones looks like to a stacker.
CNN_SHAPES = {"cnn_small": (24, 6, 0), "cnn_tiny": (16, 4, 0), "cnn_small_s1": (24, 6, 100), "cnn_mid": (20, 5, 200)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/cifar10-store"))
    parser.add_argument("--models", default="logreg_pixels,knn_pca,rff_logreg,extra_trees,lgbm_pixels,cnn_small,cnn_tiny")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)

    data = load_cifar10()
    classes = data["classes"].tolist()
    if (args.out / "ensemble_kit_store.json").exists():
        store = LogitStore(args.out)
    else:
        store = LogitStore.create(args.out, data["train_ids"], data["train_labels"], list(range(10)),
                                  n_folds=5, seed=0, test_ids=data["test_ids"])
        np.save(args.out.parent / f"{args.out.name}-test-labels.npy", data["test_labels"])
    log.info("store %s; classes %s", store, classes)
    tr, te = _features(data["train_images"]), _features(data["test_images"])

    from sklearn.decomposition import PCA
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import lightgbm as lgb

    sklearn_models = {
        "logreg_pixels": ("x16", lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))),
        "knn_pca": ("x16", lambda: make_pipeline(StandardScaler(), PCA(64, random_state=0), KNeighborsClassifier(25))),
        "rff_logreg": ("x16", lambda: make_pipeline(StandardScaler(), PCA(64, random_state=0), RBFSampler(gamma=0.01, n_components=1500, random_state=0), LogisticRegression(C=0.05, max_iter=300))),
        "extra_trees": ("x8", lambda: ExtraTreesClassifier(300, min_samples_leaf=2, n_jobs=2, random_state=0)),
        "lgbm_pixels": ("x8", lambda: lgb.LGBMClassifier(n_estimators=300, learning_rate=0.08, num_leaves=31, colsample_bytree=0.5, subsample=0.8, subsample_freq=1, n_jobs=2, verbose=-1, random_state=0)),
    }
    for name in args.models.split(","):
        if name in store.models():
            log.info("%s already stored", name)
            continue
        start = time.perf_counter()
        for k in range(store.n_folds):
            if name in store.incomplete() and k not in store.incomplete()[name]:
                continue  # fold already stored by an earlier, interrupted run
            valid = store.fold_indices(k)
            fit = np.flatnonzero(store.folds != k)
            if name in sklearn_models:
                feat, factory = sklearn_models[name]
                model = factory().fit(tr[feat][fit], store.y[fit])
                oof, test = model.predict_proba(tr[feat][valid]), model.predict_proba(te[feat])
                kind = "probs"
            else:
                width, epochs, seed_offset = CNN_SHAPES[name]
                oof, test = _train_cnn(width, epochs, seed_offset + k, data["train_images"][fit], store.y[fit],
                                       [data["train_images"][valid], data["test_images"]])
                kind = "logits"
            store.put_fold(name, k, oof, test, kind=kind, meta={"family": name}, overwrite=True)
            acc = float(np.mean(np.asarray(oof).argmax(1) == store.y[valid]))
            log.info("%s fold %d: valid acc %.4f (%.0fs)", name, k, acc, time.perf_counter() - start)
        log.info("%s done in %.0fs", name, time.perf_counter() - start)
    print(store.leaderboard().to_string())


if __name__ == "__main__":
    main()
