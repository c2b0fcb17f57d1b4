import pytest
import torch

from ensemble_kit.errors import ValidationError
from ensemble_kit.train import GeM, TrainConfig, build_model, register_model_factory
from ensemble_kit.train.losses import BiTemperedLoss, CrossEntropy, FocalLoss, create_loss
from ensemble_kit.train.fold import lr_schedule
from ensemble_kit.train.tta import apply_view, check_views


def test_soft_and_hard_targets_agree():
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    soft = torch.nn.functional.one_hot(target, 4).float()
    ce = CrossEntropy()
    assert torch.allclose(ce(logits, target), ce(logits, soft), atol=1e-6)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), ce(logits, target), atol=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target) < ce(logits, target)
    assert torch.allclose(BiTemperedLoss(t1=1.0, t2=1.0)(logits, target), ce(logits, target), atol=1e-5)
    assert torch.isfinite(BiTemperedLoss(t1=0.7, t2=1.3)(logits, soft))
    with pytest.raises(ValidationError, match="t1 <= 1 <= t2"):
        BiTemperedLoss(t1=1.2, t2=1.0)
    with pytest.raises(ValidationError, match=r"'loss': Unknown loss 'hinge'"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValidationError, match=r"'augment.policy': Unknown augmentation policy 'trivia'; did you mean 'trivial'"):
        TrainConfig.from_dict({"augment": {"policy": "trivia"}})
    assert isinstance(create_loss(TrainConfig(loss="focal", focal_gamma=0.0), label_smoothing=0.0), FocalLoss)


def test_models_timm_registered_gem_and_local_checkpoint(tmp_path):
    model = build_model("resnet10t", num_classes=5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    gem = build_model("resnet10t", num_classes=5, pooling="gem")
    assert isinstance(gem.pool, GeM) and gem(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    vit = build_model("test_vit", num_classes=3, img_size=32)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert build_model("plain_cnn", num_classes=4)(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert build_model("resnet18_multiscale", num_classes=4)(torch.randn(2, 3, 32, 32)).shape == (2, 4)

    # a "pretrained" checkpoint with a different head: the backbone loads, the head is skipped
    source = build_model("resnet10t", num_classes=7)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    loaded = build_model("resnet10t", num_classes=5, pretrained_path=str(tmp_path / "weights.pth"))
    assert torch.equal(loaded.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(ValidationError, match="does not exist"):
        build_model("resnet10t", num_classes=5, pretrained_path=str(tmp_path / "nope.pth"))
    with pytest.raises(ValidationError, match="Unknown model 'resnet9000'"):
        build_model("resnet9000", num_classes=2)


def test_register_model_factory(monkeypatch):
    from ensemble_kit.train import MODEL_FACTORIES

    # registered for this test only: the registry is what docs/api.md lists
    monkeypatch.setattr(MODEL_FACTORIES, "_items", dict(MODEL_FACTORIES._items))

    @register_model_factory("unit_test_linear")
    def factory(num_classes, **_):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))

    assert build_model("unit_test_linear", num_classes=2)(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_tta_views():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(apply_view("hflip", x), x.flip(3))
    assert torch.equal(apply_view("hvflip", x), x.flip(2).flip(3))
    assert apply_view("scale1.5", x).shape == (2, 3, 6, 6)
    check_views(("identity", "rot90", "scale0.9"))
    with pytest.raises(ValidationError, match="twice"):
        check_views(("hflip", "hflip"))


@pytest.mark.parametrize("name", ["cosine", "onecycle", "cosine_restarts", "constant"])
def test_schedules_warm_up_then_follow_their_shape(name):
    cfg = TrainConfig.from_dict({"epochs": 4, "optimizer": {"lr": 0.1},
                                 "schedule": {"name": name, "warmup_epochs": 1, "warmup_lr": 1e-4, "restart_epochs": 1}})
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = lr_schedule(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 0.02  # warm-up starts low
    assert max(lrs) == pytest.approx(0.1, rel=0.05)
    if name == "cosine":
        assert lrs[10] == pytest.approx(0.1, rel=1e-3) and lrs[-1] < 0.01
    if name == "constant":
        assert lrs[20] == pytest.approx(0.1)
    if name == "cosine_restarts":
        assert lrs[20] > lrs[19]  # restarted


@pytest.mark.parametrize("settings, key", [
    ({"model": "plain_cnn", "img_size": 4}, "'img_size'"),  # three 2x poolings: 4 px is too small
    ({"model": "test_vit", "img_size": 32, "tta": {"views": ["identity", "scale1.25"]}}, r"'tta.views \('scale1.25'\)'"),
    ({"model": "test_vit", "img_size": 32, "augment": {"test_img_size": 40}}, "'augment.test_img_size'"),
])
def test_sizes_a_model_cannot_take_are_named_before_training(tmp_path, monkeypatch, settings, key):
    from ensemble_kit import LogitStore
    from ensemble_kit.train import TrainConfig, train_cv
    from ensemble_kit.train.trainer import _FoldRun
    from helpers import tiny_image_data

    train, test, _ = tiny_image_data()
    store = LogitStore.create(tmp_path / "s", train.ids, train.labels, [0, 1, 2], n_folds=2, test_ids=test.ids)
    started = []
    monkeypatch.setattr(_FoldRun, "run", lambda self: started.append(self.fold))
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 8, **settings})
    with pytest.raises(ValidationError, match=key):
        train_cv(cfg, store, train, test, name="m")
    assert started == [] and store.incomplete() == {} and store.models() == []


def test_multiscale_resnet_has_a_cifar_stem():
    model = build_model("resnet18_multiscale", num_classes=10).eval()
    body = model.body
    x = body.layer1(body.act1(body.bn1(body.conv1(torch.zeros(1, 3, 32, 32)))))
    assert body.conv1.kernel_size == (3, 3) and body.conv1.stride == (1, 1) and x.shape[-1] == 32
    assert body.layer4(body.layer3(body.layer2(x))).shape[-1] == 4  # not 1x1 as with the ImageNet stem


def test_tensorboard_logs_every_epoch_of_every_fold(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ensemble_kit import LogitStore
    from ensemble_kit.train import train_cv
    from helpers import tiny_image_data

    train, test, _ = tiny_image_data()
    store = LogitStore.create(tmp_path / "s", train.ids, train.labels, [0, 1, 2], n_folds=2, test_ids=test.ids)
    cfg = TrainConfig.from_dict({"model": "plain_cnn", "img_size": 16, "epochs": 2, "batch_size": 16, "log": "tensorboard",
                                 "augment": {"random_resized_crop": False}})
    train_cv(cfg, store, train, test, name="m")
    for fold in (0, 1):
        events = EventAccumulator(str(store.path / "runs" / "m" / f"fold{fold}" / "tensorboard"))
        events.Reload()
        assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= set(events.Tags()["scalars"])
        assert [e.step for e in events.Scalars("loss/val")] == [1, 2]  # epochs count from 1, as in the log and history.csv
