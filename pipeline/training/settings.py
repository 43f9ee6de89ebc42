"""The training-relevant parts of an `SSDSpec` (read from pipeline.config) as training settings."""

from __future__ import annotations

from typing import Any

from pipeline.training.losses import HardExampleMinerSettings, LossSettings
from pipeline.training.targets import MatcherSettings

SUPPORTED_CLASSIFICATION = ("weighted_sigmoid", "weighted_sigmoid_focal", "weighted_softmax")
SUPPORTED_LOCALIZATION = ("weighted_smooth_l1", "weighted_l2")


def matcher_settings(spec: Any) -> MatcherSettings:
    t = spec.training
    return MatcherSettings(
        matched_threshold=float(t.matched_threshold),
        unmatched_threshold=float(t.unmatched_threshold),
        negatives_lower_than_unmatched=bool(t.negatives_lower_than_unmatched),
        force_match_for_each_row=bool(t.force_match_for_each_row),
        ignore_thresholds=bool(t.ignore_thresholds),
        negative_class_weight=float(t.negative_class_weight),
    )


def loss_settings(spec: Any) -> LossSettings:
    t = spec.training
    if t.classification_loss not in SUPPORTED_CLASSIFICATION:
        raise ValueError(
            f"pipeline.config: classification_loss {t.classification_loss!r} is not supported for "
            f"fine-tuning; supported: {', '.join(SUPPORTED_CLASSIFICATION)}"
        )
    if t.localization_loss not in SUPPORTED_LOCALIZATION:
        raise ValueError(
            f"pipeline.config: localization_loss {t.localization_loss!r} is not supported for "
            f"fine-tuning; supported: {', '.join(SUPPORTED_LOCALIZATION)}"
        )
    miner = None
    if t.hard_example_miner is not None:
        m = t.hard_example_miner
        miner = HardExampleMinerSettings(
            num_hard_examples=int(m.num_hard_examples) or None,
            iou_threshold=float(m.iou_threshold),
            loss_type=str(m.loss_type).lower(),
            max_negatives_per_positive=(
                float(m.max_negatives_per_positive) if m.max_negatives_per_positive else None
            ),
            min_negatives_per_image=int(m.min_negatives_per_image),
        )
    return LossSettings(
        classification=t.classification_loss,
        focal_gamma=float(t.focal_gamma),
        focal_alpha=None if t.focal_alpha is None else float(t.focal_alpha),
        localization=t.localization_loss,
        smooth_l1_delta=float(t.smooth_l1_delta),
        classification_weight=float(t.classification_weight),
        localization_weight=float(t.localization_weight),
        hard_example_miner=miner,
        normalize_loss_by_num_matches=bool(t.normalize_loss_by_num_matches),
        normalize_loc_loss_by_codesize=bool(t.normalize_loc_loss_by_codesize),
        add_background_class=bool(spec.add_background_class),
        encode_background_as_zeros=bool(t.encode_background_as_zeros),
        logit_scale=float(spec.post_processing.logit_scale),
    )
