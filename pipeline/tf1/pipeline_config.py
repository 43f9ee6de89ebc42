"""Read a TF1 Object Detection API `pipeline.config` and turn it into an `SSDSpec`.

The file is a text-format `TrainEvalPipelineConfig`. It is parsed with protobuf against the message
subset in `pipeline.tf1.protos.pipeline_subset`; fields outside that subset (data augmentation,
optimizers, eval settings, ...) are skipped. Every model option the TF2 model cannot reproduce
exactly is rejected with a one-line error naming the field, rather than converted approximately.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.spec import SUPPORTED_ARCHITECTURES as FASTER_RCNN_ARCHITECTURES
from pipeline.modeling.spec import (
    FPN_ARCHITECTURES,
    PPN_ARCHITECTURES,
    PPN_NUM_LAYERS,
    QUANTIZED_ARCHITECTURES,
    RESNET_FPN_DEPTHS,
    SUPPORTED_ARCHITECTURES,
    WEIGHT_SHARED_ARCHITECTURES,
    AnchorSpec,
    BoxCoderSpec,
    BoxPredictorSpec,
    FeatureExtractorSpec,
    FPNSpec,
    HardExampleMinerSpec,
    MultiscaleAnchorSpec,
    PostProcessingSpec,
    QuantizationSpec,
    SSDSpec,
    TrainingSpec,
)
from pipeline.tf1.protos.pipeline_subset import message_class

SUPPORTED_DESCRIPTION = (
    "ssd with feature_extractor.type "
    + ", ".join(SUPPORTED_ARCHITECTURES[:-1])
    + f" or {SUPPORTED_ARCHITECTURES[-1]}"
    + " (and faster_rcnn with feature_extractor.type "
    + " or ".join(FASTER_RCNN_ARCHITECTURES)
    + ")"
)
_ACTIVATIONS = {"NONE": "linear", "RELU": "relu", "RELU_6": "relu6"}


def read_pipeline_config(path: str | os.PathLike[str]) -> Any:
    """Parse a text-format TrainEvalPipelineConfig (a message of the project's subset)."""
    path = Path(path)
    if path.is_dir():
        path = path / "pipeline.config"
    if not path.is_file():
        raise PipelineError(
            f"{path}: file not found; pass a TF1 zoo directory or its pipeline.config"
        )
    message = message_class("TrainEvalPipelineConfig")()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message, allow_unknown_field=True)
    except text_format.ParseError as error:
        raise PipelineError(
            f"{path}: not a valid text-format TrainEvalPipelineConfig ({error}); "
            "fix the file or pass the zoo model's own pipeline.config"
        ) from error
    return message


def architecture_of(config: Any) -> str:
    """A short name for the detector a config describes, e.g. 'faster_rcnn_resnet50'."""
    kind = config.model.WhichOneof("model")
    if kind is None:
        return "unknown (no model { ... } block this tool recognises)"
    if kind == "ssd":
        return config.model.ssd.feature_extractor.type or "ssd (no feature_extractor.type)"
    if kind == "faster_rcnn":
        extractor = config.model.faster_rcnn.feature_extractor.type
        return extractor if extractor.startswith("faster_rcnn") else f"faster_rcnn ({extractor})"
    if kind == "experimental_model":
        return f"experimental_model {config.model.experimental_model.name}".strip()
    return kind


def ssd_spec_from_config(
    config_or_path: Any | str | os.PathLike[str], source: str | None = None
) -> SSDSpec:
    """Translate a pipeline.config (path or parsed message) into an `SSDSpec`.

    Raises PipelineError naming the file and field for anything unsupported.
    """
    return _Translator(*load_config(config_or_path, source)).spec()


def load_config(
    config_or_path: Any | str | os.PathLike[str], source: str | None = None
) -> tuple[Any, str]:
    """(parsed TrainEvalPipelineConfig, the name error messages cite) from a path (file or zoo
    directory) or an already parsed message."""
    if isinstance(config_or_path, str | os.PathLike):
        path = Path(config_or_path)
        config = read_pipeline_config(path)
        return config, source or str(path if path.is_file() else path / "pipeline.config")
    return config_or_path, source or "pipeline.config"


def enum_name(message: Any, field: str) -> str:
    """The name of an enum field's value (e.g. 'SOFTMAX')."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    return descriptor.enum_type.values_by_number[getattr(message, field)].name


class _Translator:
    def __init__(self, config: Any, source: str) -> None:
        self.config = config
        self.source = source

    def fail(self, field: str, problem: str, fix: str) -> PipelineError:
        return PipelineError(f"{self.source}: {field} {problem}; {fix}")

    def spec(self) -> SSDSpec:
        config = self.config
        architecture = architecture_of(config)
        if config.model.WhichOneof("model") != "ssd" or architecture not in SUPPORTED_ARCHITECTURES:
            # The TF2 Object Detection API names its Keras extractors `*_keras`.
            tf2 = (
                " (a TF2 Object Detection API model, already TF2)"
                if "_keras" in architecture
                else ""
            )
            raise self.fail(
                "model",
                f"describes {architecture}{tf2}, which is not supported",
                f"supported: {SUPPORTED_DESCRIPTION}",
            )
        ssd = config.model.ssd
        quantization = self.quantization(ssd, architecture)
        if ssd.num_classes <= 0:
            raise self.fail("model.ssd.num_classes", "is missing or not positive", "set it")
        if ssd.explicit_background_class:
            raise self.fail(
                "model.ssd.explicit_background_class", "is true", "only implicit background works"
            )
        return SSDSpec(
            architecture=architecture,
            num_classes=int(ssd.num_classes),
            image_size=self.image_size(ssd),
            resize_method=self.resize_method(ssd),
            add_background_class=bool(ssd.add_background_class),
            feature_extractor=self.feature_extractor(ssd),
            box_predictor=self.box_predictor(ssd),
            anchors=self.anchors(ssd),
            box_coder=self.box_coder(ssd),
            post_processing=self.post_processing(ssd),
            training=self.training(ssd),
            quantization=quantization,
        )

    def quantization(self, ssd: Any, architecture: str) -> QuantizationSpec | None:
        """`graph_rewriter.quantization`, for the architectures whose quantized graph is
        reproduced (the float layers with TF1's fake quantization)."""
        rewriter = self.config.graph_rewriter
        if not (self.config.HasField("graph_rewriter") and rewriter.HasField("quantization")):
            return None
        supported = ", ".join(QUANTIZED_ARCHITECTURES)
        if architecture not in QUANTIZED_ARCHITECTURES:
            raise self.fail(
                "graph_rewriter.quantization",
                f"is set: a quantized {architecture} graph is not supported",
                f"quantized graphs are supported for {supported}; use the float model otherwise",
            )
        predictor = ssd.box_predictor.convolutional_box_predictor
        if predictor.use_depthwise:
            raise self.fail(
                "graph_rewriter.quantization",
                "is set with box_predictor.convolutional_box_predictor.use_depthwise",
                f"quantized graphs are supported with plain conv box predictors ({supported})",
            )
        quantization = rewriter.quantization
        for field in ("weight_bits", "activation_bits"):
            bits = getattr(quantization, field)
            if not 2 <= bits <= 16:
                raise self.fail(
                    f"graph_rewriter.quantization.{field}",
                    f"is {bits}",
                    "FakeQuantWithMinMaxVars takes 2..16 bits (the zoo models use 8)",
                )
        return QuantizationSpec(
            delay=int(quantization.delay),
            weight_bits=int(quantization.weight_bits),
            activation_bits=int(quantization.activation_bits),
        )

    def image_size(self, ssd: Any) -> tuple[int, int]:
        kind = ssd.image_resizer.WhichOneof("image_resizer_oneof")
        if kind != "fixed_shape_resizer":
            raise self.fail(
                "model.ssd.image_resizer",
                f"is {kind or 'missing'}",
                "only fixed_shape_resizer (the SSD zoo models' resizer) is supported",
            )
        resizer = ssd.image_resizer.fixed_shape_resizer
        if resizer.convert_to_grayscale:
            raise self.fail(
                "model.ssd.image_resizer.fixed_shape_resizer.convert_to_grayscale",
                "is true",
                "grayscale inputs are not supported",
            )
        return (int(resizer.height), int(resizer.width))

    def resize_method(self, ssd: Any) -> str:
        resizer = ssd.image_resizer.fixed_shape_resizer
        return enum_name(resizer, "resize_method")

    def feature_extractor(self, ssd: Any) -> FeatureExtractorSpec:
        extractor = ssd.feature_extractor
        field = "model.ssd.feature_extractor"
        if extractor.use_explicit_padding:
            raise self.fail(
                f"{field}.use_explicit_padding", "is true", "only 'SAME' padding is supported"
            )
        if extractor.pad_to_multiple != 1:
            raise self.fail(
                f"{field}.pad_to_multiple", f"is {extractor.pad_to_multiple}", "set it to 1"
            )
        fpn = None
        use_depthwise = bool(extractor.use_depthwise)
        if extractor.type in FPN_ARCHITECTURES:
            fpn = self.fpn(extractor, field)
            if extractor.type in RESNET_FPN_DEPTHS:
                self.check_resnet_base(extractor, field)
                # SSDResnetV1FpnFeatureExtractor takes use_depthwise and builds nothing depthwise.
                use_depthwise = False
        elif extractor.HasField("fpn"):
            raise self.fail(
                f"{field}.fpn",
                f"is set for {extractor.type}",
                f"FPN is supported for {', '.join(FPN_ARCHITECTURES)}",
            )
        elif not 2 <= extractor.num_layers <= 6:
            raise self.fail(
                f"{field}.num_layers", f"is {extractor.num_layers}", "use 2..6 feature maps"
            )
        hyper = self.hyperparams(extractor.conv_hyperparams, f"{field}.conv_hyperparams")
        return FeatureExtractorSpec(
            type=extractor.type,
            depth_multiplier=float(extractor.depth_multiplier),
            min_depth=int(extractor.min_depth),
            use_depthwise=use_depthwise,
            override_base_feature_extractor_hyperparams=bool(
                extractor.override_base_feature_extractor_hyperparams
            ),
            fpn=fpn,
            **hyper,
        )

    def fpn(self, extractor: Any, field: str) -> FPNSpec:
        """TF1 `SSDMobileNetV1FpnFeatureExtractor` (taps Conv2d_{3,5,11,13}_pointwise for levels
        2..5) or `SSDResnetV1FpnFeatureExtractor` (block1..block4): top-down FPN, stride-2 convs
        above level 5."""
        if extractor.use_depthwise and extractor.type not in RESNET_FPN_DEPTHS:
            raise self.fail(
                f"{field}.use_depthwise", "is true", "only FPNs of plain 3x3 convs are supported"
            )
        fpn = extractor.fpn
        if not 2 <= fpn.min_level <= 5 or fpn.max_level < max(fpn.min_level, 5):
            raise self.fail(
                f"{field}.fpn",
                f"has levels {fpn.min_level}..{fpn.max_level}",
                "use min_level 2..5 and max_level >= 5 (TF1 default 3..7)",
            )
        return FPNSpec(
            min_level=int(fpn.min_level),
            max_level=int(fpn.max_level),
            additional_layer_depth=int(fpn.additional_layer_depth),
        )

    def check_resnet_base(self, extractor: Any, field: str) -> None:
        """What the ResNet base can take from an overriding conv_hyperparams (`resnet_v1`)."""
        if not extractor.override_base_feature_extractor_hyperparams:
            return
        hyper = extractor.conv_hyperparams
        if hyper.WhichOneof("normalizer_oneof") != "batch_norm":
            raise self.fail(
                f"{field}.conv_hyperparams",
                "has no batch_norm while override_base_feature_extractor_hyperparams is true",
                "a ResNet base without BatchNorm is not supported; add batch_norm",
            )
        if not hyper.batch_norm.center:
            raise self.fail(
                f"{field}.conv_hyperparams.batch_norm.center",
                "is false while override_base_feature_extractor_hyperparams is true",
                "only a ResNet base with BatchNorm center is supported",
            )

    def hyperparams(self, hyper: Any, field: str) -> dict[str, Any]:
        if hyper.WhichOneof("normalizer_oneof") == "group_norm":
            raise self.fail(f"{field}.group_norm", "is set", "only batch_norm is supported")
        activation_name = enum_name(hyper, "activation")
        batch_norm = hyper.batch_norm
        l2 = 0.0
        if hyper.regularizer.WhichOneof("regularizer_oneof") == "l2_regularizer":
            l2 = float(hyper.regularizer.l2_regularizer.weight)
        return {
            "activation": _ACTIVATIONS[activation_name],
            "batch_norm_epsilon": float(batch_norm.epsilon),
            "batch_norm_scale": bool(batch_norm.scale),
            "batch_norm_center": bool(batch_norm.center),
            "l2_weight": l2,
            "batch_norm_decay": float(batch_norm.decay),
        }

    def box_predictor(self, ssd: Any) -> BoxPredictorSpec:
        kind = ssd.box_predictor.WhichOneof("box_predictor_oneof")
        field = "model.ssd.box_predictor"
        weight_shared = ssd.feature_extractor.type in WEIGHT_SHARED_ARCHITECTURES
        if weight_shared or kind == "weight_shared_convolutional_box_predictor":
            if not weight_shared or kind != "weight_shared_convolutional_box_predictor":
                raise self.fail(
                    field,
                    f"is {kind or 'missing'} with feature_extractor.type "
                    f"{ssd.feature_extractor.type}",
                    "weight_shared_convolutional_box_predictor is supported with "
                    f"{', '.join(WEIGHT_SHARED_ARCHITECTURES)} only, and those need it",
                )
            return self.weight_shared_box_predictor(ssd)
        if kind != "convolutional_box_predictor":
            raise self.fail(
                field,
                f"is {kind or 'missing'}",
                f"only convolutional_box_predictor is supported ({SUPPORTED_DESCRIPTION})",
            )
        predictor = ssd.box_predictor.convolutional_box_predictor
        field = f"{field}.convolutional_box_predictor"
        # TF1 inserts them only when max(min(depth, max_depth), min_depth) > 0.
        inserts_layers = predictor.max_depth > 0 or predictor.min_depth > 0
        if predictor.num_layers_before_predictor > 0 and inserts_layers:
            raise self.fail(
                f"{field}.num_layers_before_predictor",
                f"is {predictor.num_layers_before_predictor}",
                "shared 1x1 layers before the predictors are not supported; use 0",
            )
        if predictor.apply_sigmoid_to_scores:
            raise self.fail(f"{field}.apply_sigmoid_to_scores", "is true", "set it to false")
        if predictor.box_code_size != 4:
            raise self.fail(
                f"{field}.box_code_size", f"is {predictor.box_code_size}", "only 4 is supported"
            )
        hyper = self.hyperparams(predictor.conv_hyperparams, f"{field}.conv_hyperparams")
        hyper.pop("batch_norm_decay", None)
        return BoxPredictorSpec(
            kernel_size=int(predictor.kernel_size),
            use_depthwise=bool(predictor.use_depthwise),
            box_code_size=int(predictor.box_code_size),
            class_prediction_bias_init=float(predictor.class_prediction_bias_init),
            use_dropout=bool(predictor.use_dropout),
            dropout_keep_probability=float(predictor.dropout_keep_probability),
            **hyper,
        )

    def weight_shared_box_predictor(self, ssd: Any) -> BoxPredictorSpec:
        predictor = ssd.box_predictor.weight_shared_convolutional_box_predictor
        field = "model.ssd.box_predictor.weight_shared_convolutional_box_predictor"
        for name in (
            "use_depthwise",
            "apply_conv_hyperparams_to_heads",
            "apply_conv_hyperparams_pointwise",
        ):
            if getattr(predictor, name):
                raise self.fail(f"{field}.{name}", "is true", "set it to false (not supported)")
        if predictor.HasField("box_encodings_clip_range"):
            raise self.fail(f"{field}.box_encodings_clip_range", "is set", "remove it")
        if enum_name(predictor, "score_converter") != "IDENTITY":
            raise self.fail(f"{field}.score_converter", "is not IDENTITY", "set it to IDENTITY")
        if predictor.box_code_size != 4:
            raise self.fail(
                f"{field}.box_code_size", f"is {predictor.box_code_size}", "only 4 is supported"
            )
        if predictor.conv_hyperparams.WhichOneof("normalizer_oneof") != "batch_norm":
            raise self.fail(
                f"{field}.conv_hyperparams.batch_norm",
                "is missing",
                "only towers with BatchNorm are supported",
            )
        if predictor.num_layers_before_predictor > 0 and predictor.depth <= 0:
            raise self.fail(f"{field}.depth", f"is {predictor.depth}", "set the tower depth")
        hyper = self.hyperparams(predictor.conv_hyperparams, f"{field}.conv_hyperparams")
        hyper.pop("batch_norm_decay", None)
        # The tower's activation is relu6 whatever conv_hyperparams says (tf.nn.relu6 in TF1).
        hyper["activation"] = "relu6"
        return BoxPredictorSpec(
            kernel_size=int(predictor.kernel_size),
            box_code_size=int(predictor.box_code_size),
            class_prediction_bias_init=float(predictor.class_prediction_bias_init),
            use_dropout=bool(predictor.use_dropout),
            dropout_keep_probability=float(predictor.dropout_keep_probability),
            weight_shared=True,
            depth=int(predictor.depth),
            num_layers_before_predictor=int(predictor.num_layers_before_predictor),
            share_prediction_tower=bool(predictor.share_prediction_tower),
            **hyper,
        )

    def multiscale_anchors(self, ssd: Any) -> AnchorSpec:
        gen = ssd.anchor_generator.multiscale_anchor_generator
        field = "model.ssd.anchor_generator.multiscale_anchor_generator"
        fpn = self.fpn(ssd.feature_extractor, "model.ssd.feature_extractor")
        if (gen.min_level, gen.max_level) != (fpn.min_level, fpn.max_level):
            raise self.fail(
                field,
                f"has levels {gen.min_level}..{gen.max_level} but feature_extractor.fpn has "
                f"{fpn.min_level}..{fpn.max_level}",
                "make them equal",
            )
        if not gen.normalize_coordinates:
            raise self.fail(f"{field}.normalize_coordinates", "is false", "set it to true")
        aspect_ratios = tuple(float(a) for a in gen.aspect_ratios)
        if not aspect_ratios:
            raise self.fail(f"{field}.aspect_ratios", "is empty", "list at least one")
        return AnchorSpec(
            num_layers=int(gen.max_level - gen.min_level + 1),
            aspect_ratios=aspect_ratios,
            multiscale=MultiscaleAnchorSpec(
                min_level=int(gen.min_level),
                max_level=int(gen.max_level),
                anchor_scale=float(gen.anchor_scale),
                aspect_ratios=aspect_ratios,
                scales_per_octave=int(gen.scales_per_octave),
                normalize_coordinates=bool(gen.normalize_coordinates),
            ),
        )

    def anchors(self, ssd: Any) -> AnchorSpec:
        kind = ssd.anchor_generator.WhichOneof("anchor_generator_oneof")
        field = "model.ssd.anchor_generator"
        fpn = ssd.feature_extractor.type in FPN_ARCHITECTURES
        if fpn and kind == "multiscale_anchor_generator":
            return self.multiscale_anchors(ssd)
        if fpn:
            raise self.fail(
                field, f"is {kind or 'missing'}", "FPN models need multiscale_anchor_generator"
            )
        if kind != "ssd_anchor_generator":
            raise self.fail(
                field, f"is {kind or 'missing'}", "only ssd_anchor_generator is supported"
            )
        gen = ssd.anchor_generator.ssd_anchor_generator
        field = f"{field}.ssd_anchor_generator"
        if ssd.feature_extractor.type in PPN_ARCHITECTURES:
            if gen.num_layers != PPN_NUM_LAYERS:
                raise self.fail(
                    f"{field}.num_layers",
                    f"is {gen.num_layers} but {ssd.feature_extractor.type} makes "
                    f"{PPN_NUM_LAYERS} feature maps",
                    f"set it to {PPN_NUM_LAYERS}",
                )
            if gen.reduce_boxes_in_lowest_layer:
                raise self.fail(
                    f"{field}.reduce_boxes_in_lowest_layer",
                    "is true",
                    "the weight-shared predictor needs equal anchors per location: set it false",
                )
        elif gen.num_layers != ssd.feature_extractor.num_layers:
            raise self.fail(
                f"{field}.num_layers",
                f"is {gen.num_layers} but feature_extractor.num_layers is "
                f"{ssd.feature_extractor.num_layers}",
                "make them equal",
            )
        if gen.scales and len(gen.scales) != gen.num_layers:
            raise self.fail(
                f"{field}.scales", f"has {len(gen.scales)} values", f"give {gen.num_layers}"
            )
        strides = tuple(zip(gen.height_stride, gen.width_stride, strict=False))
        offsets = tuple(zip(gen.height_offset, gen.width_offset, strict=False))
        for name, pairs, heights in (
            ("height_stride", strides, gen.height_stride),
            ("height_offset", offsets, gen.height_offset),
        ):
            if heights and len(pairs) != gen.num_layers:
                raise self.fail(
                    f"{field}.{name}",
                    f"gives {len(pairs)} (height, width) pairs",
                    f"give {gen.num_layers}, one per layer",
                )
        aspect_ratios = tuple(float(a) for a in gen.aspect_ratios)
        if not aspect_ratios:
            raise self.fail(f"{field}.aspect_ratios", "is empty", "list at least one")
        return AnchorSpec(
            num_layers=int(gen.num_layers),
            min_scale=float(gen.min_scale),
            max_scale=float(gen.max_scale),
            scales=tuple(float(s) for s in gen.scales),
            aspect_ratios=aspect_ratios,
            interpolated_scale_aspect_ratio=float(gen.interpolated_scale_aspect_ratio),
            reduce_boxes_in_lowest_layer=bool(gen.reduce_boxes_in_lowest_layer),
            base_anchor_size=(float(gen.base_anchor_height), float(gen.base_anchor_width)),
            anchor_strides=tuple((float(h), float(w)) for h, w in strides),
            anchor_offsets=tuple((float(h), float(w)) for h, w in offsets),
        )

    def box_coder(self, ssd: Any) -> BoxCoderSpec:
        kind = ssd.box_coder.WhichOneof("box_coder_oneof")
        if kind != "faster_rcnn_box_coder":
            raise self.fail(
                "model.ssd.box_coder",
                f"is {kind or 'missing'}",
                "only faster_rcnn_box_coder is supported",
            )
        coder = ssd.box_coder.faster_rcnn_box_coder
        return BoxCoderSpec(
            y_scale=float(coder.y_scale),
            x_scale=float(coder.x_scale),
            height_scale=float(coder.height_scale),
            width_scale=float(coder.width_scale),
        )

    def post_processing(self, ssd: Any) -> PostProcessingSpec:
        post = ssd.post_processing
        field = "model.ssd.post_processing"
        if post.HasField("calibration_config"):
            raise self.fail(f"{field}.calibration_config", "is set", "remove score calibration")
        nms = post.batch_non_max_suppression
        # use_static_shapes is accepted: padded per-class NMS selects the same boxes, it only pads
        # each class's selection (score -1, dropped by the final sort) and the output, which
        # num_detections bounds here too.
        # max_classes_per_detection only acts with class-agnostic NMS (refused here).
        for name in ("use_class_agnostic_nms", "use_partitioned_nms", "use_combined_nms"):
            if getattr(nms, name):
                raise self.fail(
                    f"{field}.batch_non_max_suppression.{name}",
                    "is true",
                    "only the standard per-class NMS is supported",
                )
        if nms.soft_nms_sigma > 0:
            raise self.fail(
                f"{field}.batch_non_max_suppression.soft_nms_sigma",
                "is set",
                "soft NMS is not supported; remove it",
            )
        converter = enum_name(post, "score_converter")
        return PostProcessingSpec(
            score_converter=converter,
            logit_scale=float(post.logit_scale),
            score_threshold=float(nms.score_threshold),
            iou_threshold=float(nms.iou_threshold),
            max_detections_per_class=int(nms.max_detections_per_class),
            max_total_detections=int(nms.max_total_detections),
        )

    def training(self, ssd: Any) -> TrainingSpec:
        matcher = ssd.matcher.argmax_matcher
        loss = ssd.loss
        localization = loss.localization_loss.WhichOneof("localization_loss") or (
            "weighted_smooth_l1"
        )
        classification = loss.classification_loss.WhichOneof("classification_loss") or (
            "weighted_sigmoid"
        )
        focal = loss.classification_loss.weighted_sigmoid_focal
        miner = None
        if loss.HasField("hard_example_miner"):
            m = loss.hard_example_miner
            miner = HardExampleMinerSpec(
                num_hard_examples=int(m.num_hard_examples),
                iou_threshold=float(m.iou_threshold),
                loss_type=enum_name(m, "loss_type"),
                max_negatives_per_positive=int(m.max_negatives_per_positive),
                min_negatives_per_image=int(m.min_negatives_per_image),
            )
        return TrainingSpec(
            matched_threshold=float(matcher.matched_threshold),
            unmatched_threshold=float(matcher.unmatched_threshold),
            ignore_thresholds=bool(matcher.ignore_thresholds),
            negatives_lower_than_unmatched=bool(matcher.negatives_lower_than_unmatched),
            force_match_for_each_row=bool(matcher.force_match_for_each_row),
            localization_loss=localization,
            smooth_l1_delta=float(loss.localization_loss.weighted_smooth_l1.delta),
            classification_loss=classification,
            focal_gamma=float(focal.gamma),
            focal_alpha=float(focal.alpha) if focal.HasField("alpha") else None,
            classification_weight=float(loss.classification_weight),
            localization_weight=float(loss.localization_weight),
            hard_example_miner=miner,
            normalize_loss_by_num_matches=bool(ssd.normalize_loss_by_num_matches),
            normalize_loc_loss_by_codesize=bool(ssd.normalize_loc_loss_by_codesize),
            encode_background_as_zeros=bool(ssd.encode_background_as_zeros),
            negative_class_weight=float(ssd.negative_class_weight),
            freeze_batchnorm=bool(ssd.freeze_batchnorm),
        )
