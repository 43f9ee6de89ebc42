"""What an SSD detector is, as read from a TF1 `pipeline.config`: frozen, JSON-serialisable.

`SSDSpec` is the one description every stage shares: the converter builds the TF2 model from it,
the fine-tune stage reads the training-relevant parts (matcher, losses, hard example miner), and
`model_spec.json` in a converted directory is `SSDSpec.to_dict()`. It is filled from a
`TrainEvalPipelineConfig` by `pipeline.tf1.pipeline_config.ssd_spec_from_config`.

Numbers keep the float32 values the TF1 proto holds (e.g. aspect ratio 0.333299994469), so the
anchors computed from a spec are bit-for-bit the TF1 graph's.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

SUPPORTED_ARCHITECTURES = (
    "ssd_mobilenet_v2",
    "ssd_mobilenet_v1",
    "ssd_mobilenet_v3_large",
    "ssd_mobilenet_v3_small",
    "ssd_inception_v2",
    "ssd_mobilenet_v1_fpn",
    "ssd_resnet50_v1_fpn",
    "ssd_resnet101_v1_fpn",
    "ssd_resnet152_v1_fpn",
    "ssd_mobilenet_v1_ppn",
)
# feature_extractor.type -> ResNet v1 depth of the RetinaNets (SSDResnet{50,101,152}V1Fpn).
RESNET_FPN_DEPTHS = {f"ssd_resnet{depth}_v1_fpn": depth for depth in (50, 101, 152)}
# Architectures whose feature maps come from a TF1 FPN (`fpn_top_down_feature_maps`) and whose
# box predictor is the weight-shared one (RetinaNet: the ResNet ones).
FPN_ARCHITECTURES = (
    "ssd_mobilenet_v1_fpn",
    "ssd_resnet50_v1_fpn",
    "ssd_resnet101_v1_fpn",
    "ssd_resnet152_v1_fpn",
)
# Architectures whose feature maps are a TF1 pooling pyramid (`pooling_pyramid_feature_maps`:
# the base map then 2x2 stride-2 max pools) and whose box predictor is the weight-shared one.
PPN_ARCHITECTURES = ("ssd_mobilenet_v1_ppn",)
# SSDMobileNetV1PpnFeatureExtractor calls pooling_pyramid_feature_maps(num_layers=6) whatever
# feature_extractor.num_layers says.
PPN_NUM_LAYERS = 6
WEIGHT_SHARED_ARCHITECTURES = FPN_ARCHITECTURES + PPN_ARCHITECTURES
# Architectures whose TF1 quantized graphs (`graph_rewriter { quantization {} }`, built by
# tf.contrib.quantize) are reproduced (pipeline.modeling.quantization).
QUANTIZED_ARCHITECTURES = ("ssd_mobilenet_v1", "ssd_mobilenet_v2")


@dataclasses.dataclass(frozen=True)
class QuantizationSpec:
    """`graph_rewriter.quantization`: fake quantization of weights and activations."""

    # Training step from which TF1 quantizes (training only; the eval graph always quantizes).
    delay: int = 500000
    weight_bits: int = 8
    activation_bits: int = 8


@dataclasses.dataclass(frozen=True)
class FPNSpec:
    """`model.ssd.feature_extractor.fpn` (TF1 defaults when the block is absent)."""

    min_level: int = 3
    max_level: int = 7
    additional_layer_depth: int = 256


@dataclasses.dataclass(frozen=True)
class FeatureExtractorSpec:
    """`model.ssd.feature_extractor` plus the hyperparameters its layers are built with."""

    # One of SUPPORTED_ARCHITECTURES (the TF1 `type` string).
    type: str = "ssd_mobilenet_v2"
    depth_multiplier: float = 1.0
    min_depth: int = 16
    # Depthwise-separable extra SSD layers (3x3 depthwise + 1x1 pointwise) instead of 3x3 convs.
    use_depthwise: bool = False
    # Activation of the extra layers ('relu6' | 'relu' | 'linear'); the MobileNet base is relu6.
    activation: str = "relu6"
    batch_norm_epsilon: float = 0.001
    batch_norm_decay: float = 0.9997
    batch_norm_scale: bool = True
    batch_norm_center: bool = True
    # L2 weight of the conv_hyperparams regularizer (TF1 adds weight * sum(w^2) ... as 0.5 * l2).
    l2_weight: float = 0.0
    override_base_feature_extractor_hyperparams: bool = False
    # FPN feature extractors only (FPN_ARCHITECTURES).
    fpn: FPNSpec | None = None


@dataclasses.dataclass(frozen=True)
class BoxPredictorSpec:
    """`model.ssd.box_predictor.convolutional_box_predictor`, or, with `weight_shared`,
    `weight_shared_convolutional_box_predictor` (RetinaNet-style: `num_layers_before_predictor`
    convs of `depth` channels shared across levels, BatchNorm per level, relu6, then one box and
    one class predictor shared across levels)."""

    kernel_size: int = 1
    # SSDLite heads: 3x3 depthwise + BN + activation, then a 1x1 predictor conv.
    use_depthwise: bool = False
    box_code_size: int = 4
    class_prediction_bias_init: float = 0.0
    use_dropout: bool = False
    dropout_keep_probability: float = 0.8
    # Hyperparameters of the depthwise head convs (only used when use_depthwise).
    activation: str = "relu6"
    batch_norm_epsilon: float = 0.001
    batch_norm_scale: bool = True
    batch_norm_center: bool = True
    l2_weight: float = 0.0
    weight_shared: bool = False
    depth: int = 0
    num_layers_before_predictor: int = 0
    # Weight-shared only: one tower (`PredictionTower`) feeds both predictors.
    share_prediction_tower: bool = False


@dataclasses.dataclass(frozen=True)
class MultiscaleAnchorSpec:
    """`model.ssd.anchor_generator.multiscale_anchor_generator` (TF1
    MultiscaleGridAnchorGenerator)."""

    min_level: int = 3
    max_level: int = 7
    anchor_scale: float = 4.0
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    scales_per_octave: int = 2
    normalize_coordinates: bool = True


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """`model.ssd.anchor_generator.ssd_anchor_generator` (TF1 MultipleGridAnchorGenerator)."""

    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    # Explicit per-layer scales; when empty they are interpolated from min_scale..max_scale.
    scales: tuple[float, ...] = ()
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    base_anchor_size: tuple[float, float] = (1.0, 1.0)
    # Per-layer (y, x) strides / offsets in pixels; empty = derived from the feature-map size.
    anchor_strides: tuple[tuple[float, float], ...] = ()
    anchor_offsets: tuple[tuple[float, float], ...] = ()
    # Set for multiscale_anchor_generator (then num_layers = its level count and the fields
    # above are unused).
    multiscale: MultiscaleAnchorSpec | None = None


@dataclasses.dataclass(frozen=True)
class BoxCoderSpec:
    """`faster_rcnn_box_coder`: encodings are (ty, tx, th, tw) times these scales."""

    y_scale: float = 10.0
    x_scale: float = 10.0
    height_scale: float = 5.0
    width_scale: float = 5.0

    @property
    def scales(self) -> tuple[float, float, float, float]:
        return (self.y_scale, self.x_scale, self.height_scale, self.width_scale)


# Where TF1's multiclass NMS clips boxes to the image window. OD API code up to mid-2018 (the
# 2018_01..2018_07_03 zoo graphs, TF <= 1.8) clips every box before per-class NMS and drops those
# left with zero area; later code (from the 2018_07_18 zoo graphs on, and every TF 1.9-1.15 export)
# runs NMS on the unclipped boxes and clips/prunes the sorted survivors
# (post_processing._clip_window_prune_boxes). Same raw outputs, different detections.
BOX_CLIPPING_CHOICES = ("before_nms", "after_nms")


@dataclasses.dataclass(frozen=True)
class PostProcessingSpec:
    """`model.ssd.post_processing`: score conversion and TF1 batch multiclass NMS."""

    # 'SIGMOID' | 'SOFTMAX' | 'IDENTITY'
    score_converter: str = "SIGMOID"
    logit_scale: float = 1.0
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_detections_per_class: int = 100
    max_total_detections: int = 100
    # One of BOX_CLIPPING_CHOICES: not in pipeline.config, it depends on the OD API version that
    # exported the graph (pipeline.tf1.graph_facts.box_clipping_of_graph).
    box_clipping: str = "before_nms"

    def __post_init__(self) -> None:
        if self.box_clipping not in BOX_CLIPPING_CHOICES:
            raise ValueError(
                f"post_processing.box_clipping: {self.box_clipping!r} is not one of "
                f"{', '.join(BOX_CLIPPING_CHOICES)}"
            )


@dataclasses.dataclass(frozen=True)
class HardExampleMinerSpec:
    """`loss.hard_example_miner` (TF1 SSD online hard negative mining)."""

    num_hard_examples: int = 3000
    iou_threshold: float = 0.99
    # 'CLASSIFICATION' | 'LOCALIZATION' | 'BOTH'
    loss_type: str = "CLASSIFICATION"
    max_negatives_per_positive: int = 3
    min_negatives_per_image: int = 0


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """What fine-tuning needs to train the model the way TF1 trained it."""

    # argmax_matcher
    matched_threshold: float = 0.5
    unmatched_threshold: float = 0.5
    ignore_thresholds: bool = False
    negatives_lower_than_unmatched: bool = True
    force_match_for_each_row: bool = True
    # 'weighted_smooth_l1' | 'weighted_l2' | 'weighted_iou'
    localization_loss: str = "weighted_smooth_l1"
    smooth_l1_delta: float = 1.0
    # 'weighted_sigmoid' | 'weighted_sigmoid_focal' | 'weighted_softmax'
    classification_loss: str = "weighted_sigmoid"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    classification_weight: float = 1.0
    localization_weight: float = 1.0
    hard_example_miner: HardExampleMinerSpec | None = None
    normalize_loss_by_num_matches: bool = True
    normalize_loc_loss_by_codesize: bool = False
    encode_background_as_zeros: bool = False
    negative_class_weight: float = 1.0
    freeze_batchnorm: bool = False


@dataclasses.dataclass(frozen=True)
class SSDSpec:
    """An SSD detector described by a TF1 pipeline.config."""

    architecture: str = "ssd_mobilenet_v2"
    # TF1 count, without background. The class predictors emit num_classes + 1 logits per anchor
    # (background first) when add_background_class.
    num_classes: int = 90
    image_size: tuple[int, int] = (300, 300)
    # TF1 fixed_shape_resizer method: 'BILINEAR' | 'NEAREST_NEIGHBOR' | 'BICUBIC' | 'AREA'.
    resize_method: str = "BILINEAR"
    add_background_class: bool = True
    feature_extractor: FeatureExtractorSpec = FeatureExtractorSpec()
    box_predictor: BoxPredictorSpec = BoxPredictorSpec()
    anchors: AnchorSpec = AnchorSpec()
    box_coder: BoxCoderSpec = BoxCoderSpec()
    post_processing: PostProcessingSpec = PostProcessingSpec()
    training: TrainingSpec = TrainingSpec()
    # Set for TF1 quantized graphs: the model fake-quantizes as TF1's eval graph does.
    quantization: QuantizationSpec | None = None

    @property
    def is_fpn(self) -> bool:
        return self.architecture in FPN_ARCHITECTURES

    @property
    def is_ppn(self) -> bool:
        return self.architecture in PPN_ARCHITECTURES

    @property
    def num_class_slots(self) -> int:
        """Logits per anchor: the TF1 class predictor's output size / anchors per location."""
        return self.num_classes + 1 if self.add_background_class else self.num_classes

    # Shortcuts for the fields most callers need.
    @property
    def depth_multiplier(self) -> float:
        return self.feature_extractor.depth_multiplier

    @property
    def min_depth(self) -> int:
        return self.feature_extractor.min_depth

    @property
    def use_depthwise(self) -> bool:
        return self.feature_extractor.use_depthwise

    @property
    def kernel_size(self) -> int:
        return self.box_predictor.kernel_size

    def with_num_classes(self, num_classes: int) -> SSDSpec:
        return dataclasses.replace(self, num_classes=int(num_classes))

    def with_box_clipping(self, box_clipping: str) -> SSDSpec:
        post = dataclasses.replace(self.post_processing, box_clipping=box_clipping)
        return dataclasses.replace(self, post_processing=post)

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SSDSpec:
        return _from_dict(cls, data)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) spec dataclass; unknown keys are an error, so typos fail loudly."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {name: _coerce(hints[name], data[name]) for name in names if name in data}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return value
