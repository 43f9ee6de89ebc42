"""What a TF1 Faster R-CNN is, as read from its `pipeline.config`: frozen, JSON-serialisable.

`FasterRCNNSpec` plays the role `SSDSpec` plays for SSD: the converter builds the TF2 model from
it and `model_spec.json` of a converted directory is `FasterRCNNSpec.to_dict()` (with
`family: faster_rcnn`, which `pipeline.modeling.builder.read_spec` dispatches on). It is filled
by `pipeline.tf1.faster_rcnn_config.faster_rcnn_spec_from_config`. Numbers keep the float32
values the TF1 proto holds, so anchors and thresholds are bit-for-bit TF1's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.modeling.spec import BOX_CLIPPING_CHOICES, BoxCoderSpec, _from_dict, _to_jsonable

FAMILY = "faster_rcnn"
SUPPORTED_ARCHITECTURES = (
    "faster_rcnn_inception_v2",
    "faster_rcnn_resnet50",
    "faster_rcnn_resnet101",
    "faster_rcnn_inception_resnet_v2",
)
# The BatchNorm epsilon each TF1 extractor hard-codes in its arg scope (Inception v2's
# `inception_v2_arg_scope` default, ResNet's `resnet_arg_scope(batch_norm_epsilon=1e-5)`,
# `inception_resnet_v2_arg_scope`'s default).
BATCH_NORM_EPSILON = {
    "faster_rcnn_inception_v2": 0.001,
    "faster_rcnn_resnet50": 1e-5,
    "faster_rcnn_resnet101": 1e-5,
    "faster_rcnn_inception_resnet_v2": 0.001,
}
# `feature_extractor.first_stage_features_stride` values each extractor converts: the output
# stride of its first stage (Inception-ResNet v2 at 8 is the 'atrous' zoo model).
FEATURES_STRIDES = {
    "faster_rcnn_inception_v2": (16,),
    "faster_rcnn_resnet50": (16,),
    "faster_rcnn_resnet101": (16,),
    "faster_rcnn_inception_resnet_v2": (8,),
}

__all__ = [
    "BOX_CLIPPING_CHOICES",
    "FAMILY",
    "FasterRCNNSpec",
    "FasterRCNNTrainingSpec",
    "GridAnchorSpec",
    "NMSSpec",
]


@dataclasses.dataclass(frozen=True)
class GridAnchorSpec:
    """`first_stage_anchor_generator.grid_anchor_generator` (absolute pixel anchors)."""

    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    base_size: tuple[float, float] = (256.0, 256.0)
    stride: tuple[float, float] = (16.0, 16.0)
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)


@dataclasses.dataclass(frozen=True)
class NMSSpec:
    """A batch_non_max_suppression block (or the first stage's equivalent fields)."""

    score_threshold: float = 0.0
    iou_threshold: float = 0.6
    max_detections_per_class: int = 100
    max_total_detections: int = 100


@dataclasses.dataclass(frozen=True)
class FasterRCNNTrainingSpec:
    """The faster_rcnn fields fine-tuning reads (TF1 proto defaults; the matchers' IoU thresholds
    are constants of TF1's `create_target_assigner`, not config fields)."""

    first_stage_minibatch_size: int = 256
    first_stage_positive_balance_fraction: float = 0.5
    first_stage_localization_loss_weight: float = 1.0
    first_stage_objectness_loss_weight: float = 1.0
    second_stage_batch_size: int = 64
    second_stage_balance_fraction: float = 0.25
    second_stage_localization_loss_weight: float = 1.0
    second_stage_classification_loss_weight: float = 1.0
    # 'weighted_softmax' (the default when unset) | 'weighted_sigmoid' | ...: fine-tuning refuses
    # what it does not implement.
    second_stage_classification_loss: str = "weighted_softmax"
    second_stage_classification_logit_scale: float = 1.0
    hard_example_miner: bool = False
    use_static_balanced_label_sampler: bool = False
    second_stage_dropout: bool = False  # mask_rcnn_box_predictor.use_dropout
    # Config fields whose L2 (or L1) regularizer has a non-zero weight.
    regularized_fields: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FasterRCNNSpec:
    """A two-stage Faster R-CNN described by a TF1 pipeline.config."""

    architecture: str = "faster_rcnn_inception_v2"
    # TF1 count, without background; the box classifier emits num_classes + 1 logits.
    num_classes: int = 90
    # keep_aspect_ratio_resizer
    min_dimension: int = 600
    max_dimension: int = 1024
    resize_method: str = "BILINEAR"
    depth_multiplier: float = 1.0
    min_depth: int = 16
    batch_norm_epsilon: float = 0.001
    anchors: GridAnchorSpec = GridAnchorSpec()
    # The first stage's output stride (`first_stage_features_stride`) and the dilation of the
    # RPN's `Conv` (`first_stage_atrous_rate`).
    features_stride: int = 16
    first_stage_atrous_rate: int = 1
    first_stage_kernel_size: int = 3
    first_stage_depth: int = 512
    first_stage_nms: NMSSpec = NMSSpec(0.0, 0.7, 300, 300)
    initial_crop_size: int = 14
    maxpool_kernel_size: int = 2
    maxpool_stride: int = 2
    second_stage_nms: NMSSpec = NMSSpec(0.0, 0.6, 100, 300)
    second_stage_score_converter: str = "SOFTMAX"
    second_stage_logit_scale: float = 1.0
    box_coder: BoxCoderSpec = dataclasses.field(default_factory=BoxCoderSpec)
    # Both stages' NMS, as SSD's (`pipeline.modeling.spec.BOX_CLIPPING_CHOICES`): the OD API of
    # TF <= 1.8 clips boxes to the image before NMS, later code after it.
    box_clipping: str = "before_nms"
    training: FasterRCNNTrainingSpec = FasterRCNNTrainingSpec()

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def feature_level(self) -> str:
        """The Model Garden level of the first stage's only feature map (log2 of its stride)."""
        return str(self.features_stride.bit_length() - 1)

    @property
    def max_proposals(self) -> int:
        return self.first_stage_nms.max_total_detections

    @property
    def num_class_slots(self) -> int:
        return self.num_classes + 1

    def with_num_classes(self, num_classes: int) -> FasterRCNNSpec:
        return dataclasses.replace(self, num_classes=int(num_classes))

    def with_box_clipping(self, box_clipping: str) -> FasterRCNNSpec:
        if box_clipping not in BOX_CLIPPING_CHOICES:
            raise ValueError(f"box_clipping {box_clipping!r} is not one of {BOX_CLIPPING_CHOICES}")
        return dataclasses.replace(self, box_clipping=box_clipping)

    def to_dict(self) -> dict[str, Any]:
        return {"family": FAMILY, **_to_jsonable(dataclasses.asdict(self))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FasterRCNNSpec:
        data = dict(data)
        family = data.pop("family", FAMILY)
        if family != FAMILY:
            raise ValueError(f"family {family!r} is not {FAMILY!r}")
        return _from_dict(cls, data)
