"""Read a TF1 `model { faster_rcnn { ... } }` pipeline.config into a `FasterRCNNSpec`.

Everything the TF2 model cannot reproduce exactly is refused with one line naming the file, the
field and what is supported (R-FCN, Mask R-CNN, other backbones and output strides, ...), rather
than converted approximately.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import PipelineError
from pipeline.modeling.faster_rcnn.spec import (
    BATCH_NORM_EPSILON,
    FEATURES_STRIDES,
    SUPPORTED_ARCHITECTURES,
    FasterRCNNSpec,
    FasterRCNNTrainingSpec,
    GridAnchorSpec,
    NMSSpec,
)
from pipeline.modeling.spec import SUPPORTED_ARCHITECTURES as SSD_ARCHITECTURES
from pipeline.modeling.spec import BoxCoderSpec
from pipeline.tf1 import pipeline_config
from pipeline.tf1.pipeline_config import enum_name, load_config

SUPPORTED_DESCRIPTION = (
    "faster_rcnn with feature_extractor.type "
    + " or ".join(SUPPORTED_ARCHITECTURES)
    + " (R-FCN, Mask R-CNN and other backbones are not supported yet), or ssd with "
    "feature_extractor.type " + " or ".join(SSD_ARCHITECTURES)
)
_FR = "model.faster_rcnn"


def is_faster_rcnn(config: Any) -> bool:
    return config.model.WhichOneof("model") == "faster_rcnn"


def _regularizer_weight(hyperparams: Any) -> float:
    kind = hyperparams.regularizer.WhichOneof("regularizer_oneof")
    return float(getattr(hyperparams.regularizer, kind).weight) if kind else 0.0


def faster_rcnn_spec_from_config(
    config_or_path: Any | str | os.PathLike[str],
    source: str | None = None,
) -> FasterRCNNSpec:
    """Translate a pipeline.config (path or parsed message) into a `FasterRCNNSpec`.

    The box clipping era is not in the config (`FasterRCNNSpec.with_box_clipping`, read from the
    graph by `pipeline.tf1.graph_facts.choose_box_clipping`).
    """
    return _Translator(*load_config(config_or_path, source)).spec()


class _Translator(pipeline_config._Translator):
    def unsupported(self, field: str, problem: str) -> PipelineError:
        return self.fail(field, problem, f"supported: {SUPPORTED_DESCRIPTION}")

    def refuse_true(
        self, message: Any, field: str, flags: tuple[str, ...], notes: dict[str, str] | None = None
    ) -> None:
        """Refuse the first of the boolean `flags` that is set (`notes`: what one means)."""
        for name in flags:
            if getattr(message, name):
                raise self.unsupported(f"{field}.{name}", f"is true{(notes or {}).get(name, '')}")

    def spec(self) -> FasterRCNNSpec:
        if not is_faster_rcnn(self.config):
            raise self.unsupported("model", "is not a faster_rcnn block")
        fr = self.config.model.faster_rcnn
        self.check_architecture(fr)
        if fr.num_classes <= 0:
            raise self.fail(f"{_FR}.num_classes", "is missing or not positive", "set it")
        if fr.number_of_stages != 2:
            raise self.unsupported(
                f"{_FR}.number_of_stages", f"is {fr.number_of_stages} (only 2-stage inference)"
            )
        self.refuse_true(
            fr, _FR, ("use_matmul_crop_and_resize", "use_static_shapes", "clip_anchors_to_image")
        )
        if fr.first_stage_atrous_rate < 1:
            raise self.fail(
                f"{_FR}.first_stage_atrous_rate", f"is {fr.first_stage_atrous_rate}",
                "use a rate >= 1 (1: no dilation)",
            )  # fmt: skip
        min_dim, max_dim, method = self.resizer(fr)
        post = fr.second_stage_post_processing
        converter = enum_name(post, "score_converter")
        if converter not in ("SOFTMAX", "SIGMOID", "IDENTITY"):
            raise self.unsupported(f"{_FR}.second_stage_post_processing.score_converter", "")
        for stage, size in (
            ("initial_crop_size", fr.initial_crop_size),
            ("maxpool_kernel_size", fr.maxpool_kernel_size),
            ("maxpool_stride", fr.maxpool_stride),
        ):
            if size <= 0:
                raise self.fail(f"{_FR}.{stage}", f"is {size}", "set it (14 / 2 / 2 in the zoo)")
        return FasterRCNNSpec(
            architecture=fr.feature_extractor.type,
            num_classes=int(fr.num_classes),
            min_dimension=min_dim,
            max_dimension=max_dim,
            resize_method=method,
            batch_norm_epsilon=BATCH_NORM_EPSILON[fr.feature_extractor.type],
            anchors=self.anchors(fr),
            features_stride=int(fr.feature_extractor.first_stage_features_stride),
            first_stage_atrous_rate=int(fr.first_stage_atrous_rate),
            first_stage_kernel_size=int(fr.first_stage_box_predictor_kernel_size),
            first_stage_depth=int(fr.first_stage_box_predictor_depth),
            first_stage_nms=NMSSpec(
                score_threshold=float(fr.first_stage_nms_score_threshold),
                iou_threshold=float(fr.first_stage_nms_iou_threshold),
                max_detections_per_class=int(fr.first_stage_max_proposals),
                max_total_detections=int(fr.first_stage_max_proposals),
            ),
            initial_crop_size=int(fr.initial_crop_size),
            maxpool_kernel_size=int(fr.maxpool_kernel_size),
            maxpool_stride=int(fr.maxpool_stride),
            second_stage_nms=self.second_stage_nms(post),
            second_stage_score_converter=converter,
            second_stage_logit_scale=float(post.logit_scale),
            box_coder=BoxCoderSpec(),
            training=self.training(fr),
        )

    def training(self, fr: Any) -> FasterRCNNTrainingSpec:
        """The loss and sampling fields (checked by fine-tuning, not by conversion)."""
        loss = fr.second_stage_classification_loss
        predictor = fr.second_stage_box_predictor.mask_rcnn_box_predictor
        kind = loss.WhichOneof("classification_loss") or "weighted_softmax"
        logit_scale = loss.weighted_softmax.logit_scale if kind == "weighted_softmax" else 1.0
        return FasterRCNNTrainingSpec(
            first_stage_minibatch_size=int(fr.first_stage_minibatch_size),
            first_stage_positive_balance_fraction=float(fr.first_stage_positive_balance_fraction),
            first_stage_localization_loss_weight=float(fr.first_stage_localization_loss_weight),
            first_stage_objectness_loss_weight=float(fr.first_stage_objectness_loss_weight),
            second_stage_batch_size=int(fr.second_stage_batch_size),
            second_stage_balance_fraction=float(fr.second_stage_balance_fraction),
            second_stage_localization_loss_weight=float(fr.second_stage_localization_loss_weight),
            second_stage_classification_loss_weight=float(
                fr.second_stage_classification_loss_weight
            ),
            second_stage_classification_loss=kind,
            second_stage_classification_logit_scale=float(logit_scale),
            hard_example_miner=fr.HasField("hard_example_miner"),
            use_static_balanced_label_sampler=bool(fr.use_static_balanced_label_sampler),
            second_stage_dropout=bool(predictor.use_dropout),
            regularized_fields=tuple(
                f"{_FR}.{name}"
                for name, hyperparams in (
                    (
                        "first_stage_box_predictor_conv_hyperparams",
                        fr.first_stage_box_predictor_conv_hyperparams,
                    ),
                    (
                        "second_stage_box_predictor.mask_rcnn_box_predictor.fc_hyperparams",
                        predictor.fc_hyperparams,
                    ),
                )
                if _regularizer_weight(hyperparams) != 0.0
            ),
        )

    def check_architecture(self, fr: Any) -> None:
        # The meta-architecture first (R-FCN, Mask R-CNN), then the backbone.
        kind = fr.second_stage_box_predictor.WhichOneof("box_predictor_oneof")
        if kind == "rfcn_box_predictor":
            raise self.unsupported(f"{_FR}.second_stage_box_predictor", "is R-FCN")
        if kind != "mask_rcnn_box_predictor":
            raise self.unsupported(f"{_FR}.second_stage_box_predictor", f"is {kind or 'missing'}")
        predictor = fr.second_stage_box_predictor.mask_rcnn_box_predictor
        field = f"{_FR}.second_stage_box_predictor.mask_rcnn_box_predictor"
        flags = ("predict_instance_masks", "predict_keypoints", "share_box_across_classes")
        self.refuse_true(predictor, field, flags, {"predict_instance_masks": " (Mask R-CNN)"})
        if predictor.box_code_size != 4:
            raise self.unsupported(f"{field}.box_code_size", f"is {predictor.box_code_size}")
        extractor = fr.feature_extractor
        field = f"{_FR}.feature_extractor"
        if extractor.type not in SUPPORTED_ARCHITECTURES:
            raise self.unsupported(f"{field}.type", f"is {extractor.type or 'missing'}")
        strides = FEATURES_STRIDES[extractor.type]
        if extractor.first_stage_features_stride not in strides:
            raise self.unsupported(
                f"{field}.first_stage_features_stride",
                f"is {extractor.first_stage_features_stride} (only "
                f"{' or '.join(map(str, strides))} for {extractor.type})",
            )
        if extractor.HasField("fpn"):
            raise self.unsupported(f"{field}.fpn", "is set")

    def resizer(self, fr: Any) -> tuple[int, int, str]:
        kind = fr.image_resizer.WhichOneof("image_resizer_oneof")
        if kind != "keep_aspect_ratio_resizer":
            raise self.unsupported(f"{_FR}.image_resizer", f"is {kind or 'missing'}")
        resizer = fr.image_resizer.keep_aspect_ratio_resizer
        field = f"{_FR}.image_resizer.keep_aspect_ratio_resizer"
        self.refuse_true(resizer, field, ("pad_to_max_dimension", "convert_to_grayscale"))
        method = enum_name(resizer, "resize_method")
        if method != "BILINEAR":
            raise self.unsupported(f"{field}.resize_method", f"is {method} (only BILINEAR)")
        if not 0 < resizer.min_dimension <= resizer.max_dimension:
            raise self.fail(
                field,
                f"has min_dimension {resizer.min_dimension} / max_dimension "
                f"{resizer.max_dimension}",
                "use 0 < min_dimension <= max_dimension",
            )
        return int(resizer.min_dimension), int(resizer.max_dimension), method

    def anchors(self, fr: Any) -> GridAnchorSpec:
        kind = fr.first_stage_anchor_generator.WhichOneof("anchor_generator_oneof")
        field = f"{_FR}.first_stage_anchor_generator"
        if kind != "grid_anchor_generator":
            raise self.unsupported(field, f"is {kind or 'missing'} (only grid_anchor_generator)")
        grid = fr.first_stage_anchor_generator.grid_anchor_generator
        if not grid.scales or not grid.aspect_ratios:
            raise self.fail(f"{field}.grid_anchor_generator", "has no scales or aspect_ratios",
                            "list both")  # fmt: skip
        stride = fr.feature_extractor.first_stage_features_stride
        if (grid.height_stride, grid.width_stride) != (stride, stride):
            raise self.unsupported(
                f"{field}.grid_anchor_generator.height_stride/width_stride",
                f"are {grid.height_stride}/{grid.width_stride} (the feature stride, "
                f"first_stage_features_stride, is {stride})",
            )
        return GridAnchorSpec(
            scales=tuple(float(s) for s in grid.scales),
            aspect_ratios=tuple(float(a) for a in grid.aspect_ratios),
            base_size=(float(grid.height), float(grid.width)),
            stride=(float(grid.height_stride), float(grid.width_stride)),
            offset=(float(grid.height_offset), float(grid.width_offset)),
        )

    def second_stage_nms(self, post: Any) -> NMSSpec:
        field = f"{_FR}.second_stage_post_processing"
        if post.HasField("calibration_config"):
            raise self.unsupported(f"{field}.calibration_config", "is set")
        nms = post.batch_non_max_suppression
        flags = ("use_class_agnostic_nms", "use_static_shapes", "use_partitioned_nms",
                 "use_combined_nms")  # fmt: skip
        self.refuse_true(nms, f"{field}.batch_non_max_suppression", flags)
        if nms.soft_nms_sigma > 0:
            raise self.unsupported(f"{field}.batch_non_max_suppression.soft_nms_sigma", "is set")
        return NMSSpec(
            score_threshold=float(nms.score_threshold),
            iou_threshold=float(nms.iou_threshold),
            max_detections_per_class=int(nms.max_detections_per_class),
            max_total_detections=int(nms.max_total_detections),
        )
