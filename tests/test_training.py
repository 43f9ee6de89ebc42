"""Unit tests of the fine-tune building blocks against TF1's documented semantics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_training_support import small_spec, train_params

from pipeline.errors import PipelineError
from pipeline.training import losses as losses_lib
from pipeline.training.config import experiment_from_params, optimization_from_params
from pipeline.training.targets import (
    IGNORED,
    NEGATIVE,
    POSITIVE,
    MatcherSettings,
    TF1TargetAssigner,
)

# ---- TF1 reference implementations (numpy, written from the TF1 OD API source) --------------


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU, as TF1 np_box_ops.iou."""
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(inter == 0, 0.0, inter / np.maximum(union, 1e-12))


def _tf1_argmax_match(sim, matched, unmatched, negatives_lower, force):
    """TF1 ArgMaxMatcher._match: sim is [num_gt, num_anchors]; returns match per anchor."""
    matches = np.argmax(sim, axis=0)
    vals = np.max(sim, axis=0)
    below = vals < unmatched
    between = (vals >= unmatched) & (vals < matched)
    matches = matches.copy()
    if negatives_lower:
        matches[below] = -1
        matches[between] = -2
    else:
        matches[below] = -2
        matches[between] = -1
    if force:
        force_cols = np.argmax(sim, axis=1)  # best anchor per gt
        indicator = np.zeros_like(sim)
        indicator[np.arange(sim.shape[0]), force_cols] = 1
        rows = np.argmax(indicator, axis=0)
        mask = indicator.max(axis=0) > 0
        matches = np.where(mask, rows, matches)
    return matches


def _tf1_encode(boxes, anchors, scales=(10.0, 10.0, 5.0, 5.0)):
    """TF1 FasterRcnnBoxCoder._encode -> (ty, tx, th, tw)."""

    def center(b):
        h, w = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return b[:, 0] + h / 2, b[:, 1] + w / 2, h, w

    ya, xa, ha, wa = center(anchors)
    y, x, h, w = center(boxes)
    ha, wa, h, w = ha + 1e-8, wa + 1e-8, h + 1e-8, w + 1e-8
    return np.stack(
        [
            (y - ya) / ha * scales[0],
            (x - xa) / wa * scales[1],
            np.log(h / ha) * scales[2],
            np.log(w / wa) * scales[3],
        ],
        axis=1,
    )


def _random_boxes(rng, n):
    yx = rng.uniform(0, 0.8, size=(n, 2))
    hw = rng.uniform(0.05, 0.4, size=(n, 2))
    return np.concatenate([yx, np.minimum(yx + hw, 1.0)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "matched,unmatched,negatives_lower,force",
    [
        (0.5, 0.5, True, True),
        (0.6, 0.4, True, True),
        (0.6, 0.4, False, False),
        (0.7, 0.3, True, False),
    ],
)
def test_target_assignment_matches_tf1(matched, unmatched, negatives_lower, force):
    rng = np.random.default_rng(0)
    anchors = _random_boxes(rng, 300)
    gt = np.concatenate([_random_boxes(rng, 6), anchors[[5, 17]] + 0.001]).astype(np.float32)
    classes = np.array([1, 2, 3, 1, 2, 3, 2, 1], np.int32)
    assigner = TF1TargetAssigner(
        anchors, MatcherSettings(matched, unmatched, negatives_lower, force)
    )
    out = {k: v.numpy() for k, v in assigner(gt, classes).items()}

    match = _tf1_argmax_match(_iou(gt, anchors), matched, unmatched, negatives_lower, force)
    positive = match >= 0
    expected_match = np.where(positive, POSITIVE, match)
    np.testing.assert_array_equal(out["match"], expected_match)
    assert positive.sum() >= 2 and (match == -1).sum() > 0
    np.testing.assert_array_equal(out["cls_targets"], np.where(positive, classes[match], 0))
    np.testing.assert_array_equal(out["cls_weights"], (match != -2).astype(np.float32))
    np.testing.assert_array_equal(out["box_weights"], positive.astype(np.float32))
    encoded = _tf1_encode(gt[np.where(positive, match, 0)], anchors)
    np.testing.assert_allclose(out["box_targets"][positive], encoded[positive], atol=1e-4)
    assert not out["box_targets"][~positive].any()


def test_target_assignment_without_boxes_is_all_background():
    anchors = _random_boxes(np.random.default_rng(1), 50)
    assigner = TF1TargetAssigner(anchors, MatcherSettings())
    out = assigner(tf.zeros([0, 4]), tf.zeros([0], tf.int32))
    assert (out["match"].numpy() == NEGATIVE).all()
    assert (out["cls_targets"].numpy() == 0).all() and (out["cls_weights"].numpy() == 1).all()
    assert not out["box_weights"].numpy().any()


def _tf1_mined_indices(losses, match, num_hard, max_neg_per_pos, min_neg):
    """TF1 HardExampleMiner for boxes that never overlap (NMS keeps the loss order)."""
    order = np.argsort(-losses, kind="stable")[:num_hard]
    sel_match = match[order]
    positives = sel_match >= 0
    negatives = sel_match == -1
    max_neg = max(min_neg, int(max_neg_per_pos * positives.sum()))
    keep = positives | (np.cumsum(negatives) <= max_neg)
    return set(order[keep].tolist())


def test_hard_example_miner_keeps_tf1_selection():
    rng = np.random.default_rng(2)
    n = 64
    # Disjoint anchors on an 8x8 grid and zero box predictions: decoded boxes never overlap.
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2) / 8
    anchors = np.concatenate([grid, grid + 0.1], axis=1).astype(np.float32)
    cls_losses = rng.uniform(0, 1, size=(2, n)).astype(np.float32)
    loc_losses = rng.uniform(0, 1, size=(2, n)).astype(np.float32)
    match = np.full((2, n), -1, np.int32)
    match[0, [3, 9, 40]] = 1
    match[1, [7]] = 1
    match[1, [8, 9]] = IGNORED
    miner = losses_lib.HardExampleMinerSettings(
        num_hard_examples=40,
        iou_threshold=0.99,
        max_negatives_per_positive=3,
        min_negatives_per_image=5,
    )
    mask = losses_lib.hard_example_mask(
        tf.constant(cls_losses),
        tf.constant(loc_losses),
        tf.zeros([2, n, 4]),
        tf.constant(anchors),
        tf.constant(match),
        miner,
        losses_lib.LossSettings(),
        (10.0, 10.0, 5.0, 5.0),
    ).numpy()
    for image in range(2):
        expected = _tf1_mined_indices(cls_losses[image], match[image], 40, 3, 5)
        assert set(np.flatnonzero(mask[image]).tolist()) == expected


def test_losses_follow_tf1_definitions():
    rng = np.random.default_rng(3)
    b, n, k = 2, 10, 4
    logits = rng.normal(size=(b, n, k)).astype(np.float32)
    targets = rng.integers(0, k, size=(b, n)).astype(np.int32)
    weights = rng.integers(0, 2, size=(b, n)).astype(np.float32)
    box_out = rng.normal(size=(b, n, 4)).astype(np.float32) * 2
    box_tgt = rng.normal(size=(b, n, 4)).astype(np.float32)
    box_w = (targets > 0).astype(np.float32)
    settings = losses_lib.LossSettings(hard_example_miner=None)
    labels = {
        "cls_targets": tf.constant(targets),
        "cls_weights": tf.constant(weights),
        "box_targets": tf.constant(box_tgt),
        "box_weights": tf.constant(box_w),
        "match": tf.constant(np.where(box_w > 0, 1, -1).astype(np.int32)),
    }
    out = losses_lib.ssd_losses(
        tf.constant(logits), tf.constant(box_out), labels, tf.zeros([n, 4]), settings
    )
    onehot = np.eye(k)[targets]
    ce = np.maximum(logits, 0) - logits * onehot + np.log1p(np.exp(-np.abs(logits)))
    cls = (ce.sum(-1) * weights).sum()
    diff = np.abs(box_out - box_tgt)
    huber = np.where(diff <= 1, 0.5 * diff**2, diff - 0.5).sum(-1)
    loc = (huber * box_w).sum()
    normalizer = max(box_w.sum(), 1.0)
    np.testing.assert_allclose(out["cls_loss"].numpy(), cls / normalizer, rtol=1e-5)
    np.testing.assert_allclose(out["box_loss"].numpy(), loc / normalizer, rtol=1e-5)

    focal = losses_lib.classification_losses(
        tf.constant(logits),
        tf.constant(targets),
        tf.constant(weights),
        losses_lib.LossSettings(classification="weighted_sigmoid_focal", focal_alpha=0.25),
    ).numpy()
    p = 1 / (1 + np.exp(-logits))
    p_t = onehot * p + (1 - onehot) * (1 - p)
    alpha_t = onehot * 0.25 + (1 - onehot) * 0.75
    expected = ((1 - p_t) ** 2 * alpha_t * ce).sum(-1) * weights
    np.testing.assert_allclose(focal, expected, rtol=1e-4, atol=1e-6)

    # encode_background_as_zeros: background anchors' target is all zeros (TF1's
    # `_unmatched_class_label`), the background slot included; positives keep their one-hot.
    zeros = losses_lib.classification_losses(
        tf.constant(logits),
        tf.constant(targets),
        tf.constant(weights),
        losses_lib.LossSettings(
            classification="weighted_sigmoid_focal", encode_background_as_zeros=True
        ),
    ).numpy()
    onehot[..., 0] = 0.0
    ce = np.maximum(logits, 0) - logits * onehot + np.log1p(np.exp(-np.abs(logits)))
    p_t = onehot * p + (1 - onehot) * (1 - p)
    alpha_t = onehot * 0.25 + (1 - onehot) * 0.75
    expected = ((1 - p_t) ** 2 * alpha_t * ce).sum(-1) * weights
    np.testing.assert_allclose(zeros, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(zeros, focal)


# ---- input pipeline ------------------------------------------------------------------------------


def test_horizontal_flip_moves_boxes_with_the_image():
    from pipeline.training.augmentation import horizontal_flip

    image = np.zeros([10, 20, 3], np.uint8)
    image[2:4, 1:5] = 255  # box ymin .2 xmin .05 ymax .4 xmax .25
    flipped, boxes = horizontal_flip(tf.constant(image), tf.constant([[0.2, 0.05, 0.4, 0.25]]))
    _, xs = np.nonzero(flipped.numpy()[..., 0])
    np.testing.assert_allclose(boxes.numpy(), [[0.2, 0.75, 0.4, 0.95]], atol=1e-6)
    assert xs.min() / 20 == pytest.approx(0.75) and (xs.max() + 1) / 20 == pytest.approx(0.95)


def test_input_stream_is_deterministic_and_resumable(tmp_path, coco_tiny):
    from test_training_support import write_tfrecords

    from pipeline.modeling import anchors as anchors_lib
    from pipeline.modeling.preprocessing import preprocess
    from pipeline.training.inputs import InputSettings, build_dataset

    spec = small_spec()
    records = write_tfrecords(tmp_path / "t.tfrecord", coco_tiny, limit=10)
    assigner = TF1TargetAssigner(anchors_lib.tf1_anchor_boxes(spec), MatcherSettings())

    def batches(skip, count):
        settings = InputSettings(
            str(records), batch_size=2, shuffle_buffer_size=8, skip_examples=skip
        )
        ds = build_dataset(settings, lambda images: preprocess(images, spec), assigner, 3)
        return list(ds.take(count).as_numpy_iterator())

    full = batches(0, 8)  # crosses epochs (10 examples)
    again = batches(0, 8)
    resumed = batches(6, 5)  # 3 steps of batch 2 consumed
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1]["cls_targets"], b[1]["cls_targets"])
    image, labels = full[0]
    assert image.shape == (2, 96, 96, 3) and image.min() >= -1.0 and image.max() <= 1.0
    assert labels["box_targets"].shape == (2, anchors_lib.tf1_anchor_boxes(spec).shape[0], 4)
    assert labels["box_weights"].sum() > 0


# ---- freezing, restore ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_pair():
    from test_training_support import build_model

    return build_model(small_spec()), small_spec()


@pytest.mark.parametrize("choice", ["none", "backbone", "backbone_and_extras", "all_but_heads"])
def test_freeze_choices_split_variables(model_pair, choice):
    from omegaconf import OmegaConf

    from pipeline.training.freezing import FreezeSettings, plan_freezing

    model, _ = model_pair
    conf = OmegaConf.load(f"conf/train/freeze/{choice}.yaml")
    items = model.checkpoint_items
    modules = [m for m in conf.modules if m in items]
    plan = plan_freezing(
        model,
        FreezeSettings(
            choice, tuple(modules), tuple(conf.patterns), tuple(conf.trainable_patterns)
        ),
    )
    assert len(plan.trained_paths) + len(plan.frozen_paths) == len(model.trainable_variables)
    assert all("moving_" in p for p in plan.non_trainable_paths)
    if choice == "none":
        assert not plan.frozen_paths
    elif choice == "all_but_heads":
        assert plan.trained_paths and all(
            p.startswith(("head/_classifier", "head/_box_regressor")) for p in plan.trained_paths
        )
    else:
        assert all(p.split("/")[0] in modules for p in plan.frozen_paths)
        assert all(p.split("/")[0] not in modules for p in plan.trained_paths)


def test_freeze_pattern_and_bad_module(model_pair):
    from pipeline.training.freezing import FreezeSettings, plan_freezing

    model, _ = model_pair
    plan = plan_freezing(model, FreezeSettings("p", patterns=(r"/bias$",)))
    assert plan.frozen_paths and all(p.endswith("/bias") for p in plan.frozen_paths)
    with pytest.raises(ValueError, match="not in the model's modules"):
        plan_freezing(model, FreezeSettings("x", modules=("nonexistent",)))


def test_restore_reinitialises_only_resized_class_predictors(tmp_path):
    from test_training_support import build_model, write_converted

    from pipeline.training.restore import restore_model
    from pipeline.training.variables import checkpoint_items, variable_paths

    _, source = write_converted(tmp_path / "conv", num_classes=3)
    target = build_model(small_spec(num_classes=5))
    fresh = {p: v.numpy().copy() for p, v in variable_paths(checkpoint_items(target)).values()}
    report = restore_model(target, str(tmp_path / "conv" / "checkpoint"))
    assert report.reinitialized and all(
        p.startswith("head/_classifier") for p in report.reinitialized
    )
    assert not report.not_in_checkpoint
    src = {p: v.numpy() for p, v in variable_paths(checkpoint_items(source)).values()}
    for path, variable in variable_paths(checkpoint_items(target)).values():
        if path in report.reinitialized:
            np.testing.assert_array_equal(variable.numpy(), fresh[path])
        else:
            np.testing.assert_array_equal(variable.numpy(), src[path])


# ---- configuration -------------------------------------------------------------------------------


def _schedule(train):
    from official.modeling.optimization import OptimizerFactory
    from official.modeling.optimization.configs.optimization_config import OptimizationConfig

    factory = OptimizerFactory(OptimizationConfig(optimization_from_params(train)))
    lr = factory.build_learning_rate()
    return (lambda s: float(lr(s))) if callable(lr) else (lambda s: float(lr))


def test_schedules_translate_to_model_garden():
    cosine = _schedule(
        train_params(
            steps=100, **{"schedule": {"type": "cosine", "warmup_steps": 10, "alpha": 0.0}}
        )
    )
    assert cosine(0) == pytest.approx(0.0) and cosine(5) == pytest.approx(0.025)
    assert cosine(10) == pytest.approx(0.05) and cosine(55) == pytest.approx(0.025, rel=1e-4)
    assert cosine(100) == pytest.approx(0.0, abs=1e-7)
    step = _schedule(
        train_params(steps=100, **{"schedule": {"type": "step", "milestones": [0.5], "gamma": 0.1}})
    )
    assert step(49) == pytest.approx(0.05) and step(51) == pytest.approx(0.005)
    assert _schedule(train_params())(3) == pytest.approx(0.05)


def test_optimizers_and_errors():
    for kind, extra in [
        ("sgd", {"momentum": 0.9}),
        ("adam", {"beta_1": 0.9}),
        ("adamw", {"weight_decay_rate": 1e-4}),
        ("rmsprop", {"rho": 0.9, "momentum": 0.9, "epsilon": 1.0}),
    ]:
        train = train_params(
            optimizer={"type": kind, "learning_rate": 1e-3, **extra}, ema_decay=0.99
        )
        config = optimization_from_params(train)
        assert config["optimizer"]["type"] == kind and config["ema"]["average_decay"] == 0.99
    with pytest.raises(PipelineError, match=r"train\.optimizer\.type"):
        optimization_from_params(train_params(optimizer={"type": "lamb", "learning_rate": 1.0}))
    with pytest.raises(PipelineError, match="does not take"):
        optimization_from_params(
            train_params(optimizer={"type": "adam", "learning_rate": 1.0, "momentum": 0.9})
        )
    with pytest.raises(PipelineError, match="learning_rate"):
        optimization_from_params(train_params(optimizer={"type": "sgd"}))


def test_experiment_is_registered_and_overridden():
    from official.core import exp_factory

    import pipeline.training.task  # noqa: F401  (registers the task)
    from pipeline.training.config import EXPERIMENT

    assert exp_factory.get_exp_config(EXPERIMENT).task.freeze.freeze_batch_norm
    experiment = experiment_from_params(train_params(steps=7), "/conv", "a*.tfrecord", None)
    assert experiment.trainer.train_steps == 7
    assert experiment.task.train_data.input_path == "a*.tfrecord"
    assert experiment.task.freeze.modules == ["backbone"]
    assert experiment.runtime.distribution_strategy == "one_device"


def test_conf_train_composes_with_learning_rate_key(tmp_path):
    from hydra import compose, initialize_config_dir

    conf_dir = tmp_path / "conf"
    (conf_dir).mkdir()
    (conf_dir / "config.yaml").write_text("defaults:\n  - train: finetune\n  - _self_\n")
    import shutil

    shutil.copytree("conf/train", conf_dir / "train")
    with initialize_config_dir(str(conf_dir), version_base=None):
        for overrides in (
            [],
            ["train/optimizer=adam", "train/schedule=step", "train/freeze=all_but_heads"],
            ["train/optimizer=rmsprop", "train/freeze=none", "train.optimizer.learning_rate=1e-4"],
            [
                "train/optimizer=adamw",
                "train/schedule=constant",
                "train/freeze=backbone_and_extras",
            ],
        ):
            cfg = compose("config", overrides=overrides)
            assert "learning_rate" in cfg.train.optimizer
            experiment = experiment_from_params(cfg.train, "/conv", "x", None)
            assert experiment.trainer.optimizer_config.optimizer.type == cfg.train.optimizer.type
        assert cfg.train.freeze.modules == ["backbone", "decoder"]
