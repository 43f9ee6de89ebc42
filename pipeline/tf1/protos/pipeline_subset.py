"""The subset of the TF1 Object Detection API config protos this project reads.

The OD API's `.proto` files are not installable on their own (they come with the whole TF1
research tree), and compiling a `.proto` at build time needs `protoc`. The messages are therefore
declared here as data and turned into a `FileDescriptorProto`, registered in a private descriptor
pool and materialised with `message_factory` — the protobuf runtime's supported way to build
message classes at run time. Field names, types and defaults follow
`research/object_detection/protos/*.proto`; field numbers are the OD API's where it matters
(binary compatibility is not needed: configs are text format). Fields not declared here are
skipped when parsing (`allow_unknown_field`), so newer or exotic configs still load.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "pipeline_tf1_subset"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "int32": _F.TYPE_INT32,
    "float": _F.TYPE_FLOAT,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
}

# PreprocessingStep's oneof (object_detection/protos/preprocessor.proto, OD API 2.8), in order.
_PREPROCESSING_STEP_NUMBERS = tuple(
    (name, number)
    for number, name in enumerate(
        (
            "normalize_image",
            "random_horizontal_flip",
            "random_pixel_value_scale",
            "random_image_scale",
            "random_rgb_to_gray",
            "random_adjust_brightness",
            "random_adjust_contrast",
            "random_adjust_hue",
            "random_adjust_saturation",
            "random_distort_color",
            "random_jitter_boxes",
            "random_crop_image",
            "random_pad_image",
            "random_crop_pad_image",
            "random_crop_to_aspect_ratio",
            "random_black_patches",
            "random_resize_method",
            "scale_boxes_to_pixel_coordinates",
            "resize_image",
            "subtract_channel_mean",
            "ssd_random_crop",
            "ssd_random_crop_pad",
            "ssd_random_crop_fixed_aspect_ratio",
            "ssd_random_crop_pad_fixed_aspect_ratio",
            "random_vertical_flip",
            "random_rotation90",
            "rgb_to_gray",
            "convert_class_logits_to_softmax",
            "random_absolute_pad_image",
            "random_self_concat_image",
            "autoaugment_image",
            "drop_label_probabilistically",
            "remap_labels",
            "random_jpeg_quality",
            "random_downscale_to_target_pixels",
            "random_patch_gaussian",
            "random_square_crop_by_scale",
            "random_scale_crop_and_pad_to_square",
            "adjust_gamma",
        ),
        start=1,
    )
)
# The options declared with their fields (the message type each takes).
_PREPROCESSING_STEPS = {
    "random_horizontal_flip": "RandomHorizontalFlip",
    "random_image_scale": "RandomImageScale",
    "random_rgb_to_gray": "RandomRGBtoGray",
    "random_adjust_brightness": "RandomAdjustBrightness",
    "random_adjust_contrast": "RandomAdjustContrast",
    "random_adjust_hue": "RandomAdjustHue",
    "random_adjust_saturation": "RandomAdjustSaturation",
    "random_distort_color": "RandomDistortColor",
    "random_crop_image": "RandomCropImage",
    "random_pad_image": "RandomPadImage",
    "random_black_patches": "RandomBlackPatches",
    "ssd_random_crop": "SSDRandomCrop",
    "random_vertical_flip": "RandomVerticalFlip",
    "random_rotation90": "RandomRotation90",
    "random_pixel_value_scale": "RandomPixelValueScale",
    "random_jitter_boxes": "RandomJitterBoxes",
    "random_crop_pad_image": "RandomCropPadImage",
    "random_crop_to_aspect_ratio": "RandomCropToAspectRatio",
    "ssd_random_crop_pad": "SSDRandomCropPad",
    "ssd_random_crop_fixed_aspect_ratio": "SSDRandomCropFixedAspectRatio",
}


def _crop_fields(clip_boxes_number: int, defaults: bool) -> list[tuple[Any, ...]]:
    """The crop arguments RandomCropImage, RandomCropPadImage and the SSD crop operations share
    (preprocessor.proto numbers them alike but for clip_boxes); the operations have no defaults."""
    values = (
        ("min_object_covered", 1.0),
        ("min_aspect_ratio", 0.75),
        ("max_aspect_ratio", 1.33),
        ("min_area", 0.1),
        ("max_area", 1.0),
        ("overlap_thresh", 0.3),
    )
    fields: list[tuple[Any, ...]] = [
        (name, number, "float", default if defaults else None)
        for number, (name, default) in enumerate(values, start=1)
    ]
    fields.append(("clip_boxes", clip_boxes_number, "bool", True))
    fields.append(("random_coef", 7, "float", 0.0 if defaults else None))
    return fields


# message name -> {"fields": [(name, number, type, default-or-None, repeated?)],
#                  "oneofs": {oneof name: [field names]},
#                  "enums": {enum name: [values] or {value: number}}}
# A type that is not a scalar names a message or enum of this file ("Outer.Inner" for nested).
_MESSAGES: dict[str, dict[str, Any]] = {
    "TrainEvalPipelineConfig": {
        "fields": [
            ("model", 1, "DetectionModel"),
            ("train_config", 2, "TrainConfig"),
            ("eval_config", 4, "EvalConfig"),
            ("graph_rewriter", 6, "GraphRewriter"),
        ]
    },
    # Decides whether the TF1 exporter writes the moving averages or the raw weights.
    "EvalConfig": {"fields": [("use_moving_averages", 11, "bool", False)]},
    "GraphRewriter": {"fields": [("quantization", 1, "Quantization")]},
    "Quantization": {
        "fields": [
            ("delay", 1, "int32", 500000),
            ("weight_bits", 2, "int32", 8),
            ("activation_bits", 3, "int32", 8),
        ]
    },
    "TrainConfig": {
        "fields": [
            ("batch_size", 1, "int32", 32),
            ("fine_tune_checkpoint", 7, "string", ""),
            ("data_augmentation_options", 2, "PreprocessingStep", None, True),
            ("num_steps", 9, "int32", 0),
            ("fine_tune_checkpoint_type", 22, "string", ""),
        ]
    },
    # object_detection/protos/preprocessor.proto: every option of the oneof is declared (so a
    # config's option is recognised by name); the options fine-tuning implements
    # (pipeline.training.augmentation) have their fields, the others none.
    "PreprocessingStep": {
        "fields": [
            (name, number, _PREPROCESSING_STEPS.get(name, "OtherPreprocessingStep"))
            for name, number in _PREPROCESSING_STEP_NUMBERS
        ],
        "oneofs": {"preprocessing_step": [name for name, _ in _PREPROCESSING_STEP_NUMBERS]},
    },
    "OtherPreprocessingStep": {"fields": []},
    "RandomHorizontalFlip": {
        "fields": [
            ("keypoint_flip_permutation", 1, "int32", None, True),
            ("probability", 2, "float", 0.5),
        ]
    },
    "RandomImageScale": {
        "fields": [("min_scale_ratio", 1, "float", 0.5), ("max_scale_ratio", 2, "float", 2.0)]
    },
    "RandomRGBtoGray": {"fields": [("probability", 1, "float", 0.1)]},
    "RandomAdjustBrightness": {"fields": [("max_delta", 1, "float", 0.2)]},
    "RandomAdjustContrast": {
        "fields": [("min_delta", 1, "float", 0.8), ("max_delta", 2, "float", 1.25)]
    },
    "RandomAdjustHue": {"fields": [("max_delta", 1, "float", 0.02)]},
    "RandomAdjustSaturation": {
        "fields": [("min_delta", 1, "float", 0.8), ("max_delta", 2, "float", 1.25)]
    },
    "RandomDistortColor": {"fields": [("color_ordering", 1, "int32", 0)]},
    "RandomCropImage": {
        "fields": [
            *_crop_fields(clip_boxes_number=8, defaults=True),
        ]
    },
    "RandomPadImage": {
        "fields": [
            ("min_image_height", 1, "int32"),
            ("min_image_width", 2, "int32"),
            ("max_image_height", 3, "int32"),
            ("max_image_width", 4, "int32"),
            ("pad_color", 5, "float", None, True),
        ]
    },
    "RandomBlackPatches": {
        "fields": [
            ("max_black_patches", 1, "int32", 10),
            ("probability", 2, "float", 0.5),
            ("size_to_image_ratio", 3, "float", 0.1),
        ]
    },
    "SSDRandomCrop": {"fields": [("operations", 1, "SSDRandomCropOperation", None, True)]},
    "SSDRandomCropOperation": {
        "fields": [
            *_crop_fields(clip_boxes_number=8, defaults=False),
        ]
    },
    "RandomVerticalFlip": {
        "fields": [
            ("keypoint_flip_permutation", 1, "int32", None, True),
            ("probability", 2, "float", 0.5),
        ]
    },
    "RandomRotation90": {
        "fields": [
            ("keypoint_rot_permutation", 1, "int32", None, True),
            ("probability", 2, "float", 0.5),
        ]
    },
    "RandomPixelValueScale": {"fields": [("minval", 1, "float", 0.9), ("maxval", 2, "float", 1.1)]},
    "RandomJitterBoxes": {
        "enums": {
            "JitterMode": {
                "DEFAULT": 0,
                "EXPAND": 1,
                "SHRINK": 2,
                "EXPAND_SYMMETRIC": 4,
                "SHRINK_SYMMETRIC": 5,
                "EXPAND_SYMMETRIC_XY": 6,
                "SHRINK_SYMMETRIC_XY": 7,
            }
        },
        "fields": [
            ("ratio", 1, "float", 0.05),
            ("jitter_mode", 2, "RandomJitterBoxes.JitterMode", "DEFAULT"),
        ],
    },
    "RandomCropPadImage": {
        "fields": [
            *_crop_fields(clip_boxes_number=11, defaults=True),
            ("min_padded_size_ratio", 8, "float", None, True),
            ("max_padded_size_ratio", 9, "float", None, True),
            ("pad_color", 10, "float", None, True),
        ]
    },
    "RandomCropToAspectRatio": {
        "fields": [
            ("aspect_ratio", 1, "float", 1.0),
            ("overlap_thresh", 2, "float", 0.3),
            ("clip_boxes", 3, "bool", True),
        ]
    },
    "SSDRandomCropPad": {"fields": [("operations", 1, "SSDRandomCropPadOperation", None, True)]},
    "SSDRandomCropPadOperation": {
        "fields": [
            *_crop_fields(clip_boxes_number=13, defaults=False),
            ("min_padded_size_ratio", 8, "float", None, True),
            ("max_padded_size_ratio", 9, "float", None, True),
            ("pad_color_r", 10, "float"),
            ("pad_color_g", 11, "float"),
            ("pad_color_b", 12, "float"),
        ]
    },
    "SSDRandomCropFixedAspectRatio": {
        "fields": [
            ("operations", 1, "SSDRandomCropFixedAspectRatioOperation", None, True),
            ("aspect_ratio", 2, "float", 1.0),
        ]
    },
    "SSDRandomCropFixedAspectRatioOperation": {
        "fields": [
            ("min_object_covered", 1, "float"),
            ("min_area", 4, "float"),
            ("max_area", 5, "float"),
            ("overlap_thresh", 6, "float"),
            ("clip_boxes", 8, "bool", True),
            ("random_coef", 7, "float"),
        ]
    },
    "DetectionModel": {
        "fields": [
            ("faster_rcnn", 1, "FasterRcnn"),
            ("ssd", 2, "Ssd"),
            ("experimental_model", 3, "ExperimentalModel"),
            ("center_net", 4, "OtherModel"),
        ],
        "oneofs": {"model": ["faster_rcnn", "ssd", "experimental_model", "center_net"]},
    },
    "OtherModel": {"fields": []},
    "ExperimentalModel": {"fields": [("name", 1, "string", "")]},
    "FasterRcnn": {
        "fields": [
            ("number_of_stages", 1, "int32", 2),
            ("num_classes", 3, "int32", 0),
            ("image_resizer", 4, "ImageResizer"),
            ("feature_extractor", 5, "FasterRcnnFeatureExtractor"),
            ("first_stage_anchor_generator", 6, "AnchorGenerator"),
            ("first_stage_atrous_rate", 7, "int32", 1),
            ("first_stage_box_predictor_conv_hyperparams", 8, "Hyperparams"),
            ("first_stage_box_predictor_kernel_size", 9, "int32", 3),
            ("first_stage_box_predictor_depth", 10, "int32", 512),
            ("first_stage_minibatch_size", 11, "int32", 256),
            ("first_stage_positive_balance_fraction", 12, "float", 0.5),
            ("first_stage_nms_score_threshold", 13, "float", 0.0),
            ("first_stage_nms_iou_threshold", 14, "float", 0.7),
            ("first_stage_max_proposals", 15, "int32", 300),
            ("first_stage_localization_loss_weight", 16, "float", 1.0),
            ("first_stage_objectness_loss_weight", 17, "float", 1.0),
            ("initial_crop_size", 18, "int32", 0),
            ("maxpool_kernel_size", 19, "int32", 0),
            ("maxpool_stride", 20, "int32", 0),
            ("second_stage_box_predictor", 21, "BoxPredictor"),
            ("second_stage_batch_size", 22, "int32", 64),
            ("second_stage_balance_fraction", 23, "float", 0.25),
            ("second_stage_post_processing", 24, "PostProcessing"),
            ("second_stage_localization_loss_weight", 25, "float", 1.0),
            ("second_stage_classification_loss_weight", 26, "float", 1.0),
            ("hard_example_miner", 28, "HardExampleMiner"),
            ("second_stage_classification_loss", 29, "ClassificationLoss"),
            ("use_matmul_crop_and_resize", 31, "bool", False),
            ("clip_anchors_to_image", 32, "bool", False),
            ("use_static_balanced_label_sampler", 34, "bool", False),
            ("use_static_shapes", 35, "bool", False),
            ("use_static_shapes_for_eval", 37, "bool", False),
            ("use_combined_nms_in_first_stage", 40, "bool", False),
        ]
    },
    "FasterRcnnFeatureExtractor": {
        "fields": [
            ("type", 1, "string", ""),
            ("first_stage_features_stride", 2, "int32", 16),
            ("batch_norm_trainable", 3, "bool", False),
            ("pad_to_multiple", 6, "int32", 32),
            ("fpn", 7, "FeaturePyramidNetworks"),
        ]
    },
    "Ssd": {
        "fields": [
            ("num_classes", 1, "int32", 0),
            ("image_resizer", 2, "ImageResizer"),
            ("feature_extractor", 3, "SsdFeatureExtractor"),
            ("box_coder", 4, "BoxCoder"),
            ("matcher", 5, "Matcher"),
            ("box_predictor", 7, "BoxPredictor"),
            ("anchor_generator", 8, "AnchorGenerator"),
            ("post_processing", 9, "PostProcessing"),
            ("normalize_loss_by_num_matches", 10, "bool", True),
            ("loss", 11, "Loss"),
            ("encode_background_as_zeros", 12, "bool", False),
            ("negative_class_weight", 13, "float", 1.0),
            ("normalize_loc_loss_by_codesize", 14, "bool", False),
            ("inplace_batchnorm_update", 15, "bool", False),
            ("freeze_batchnorm", 16, "bool", False),
            ("add_background_class", 21, "bool", True),
            ("explicit_background_class", 24, "bool", False),
        ]
    },
    "SsdFeatureExtractor": {
        "fields": [
            ("type", 1, "string", ""),
            ("depth_multiplier", 2, "float", 1.0),
            ("min_depth", 3, "int32", 16),
            ("conv_hyperparams", 4, "Hyperparams"),
            ("pad_to_multiple", 5, "int32", 1),
            ("use_explicit_padding", 7, "bool", False),
            ("use_depthwise", 8, "bool", False),
            ("override_base_feature_extractor_hyperparams", 9, "bool", False),
            ("fpn", 10, "FeaturePyramidNetworks"),
            ("num_layers", 12, "int32", 6),
        ]
    },
    "FeaturePyramidNetworks": {
        "fields": [
            ("min_level", 1, "int32", 3),
            ("max_level", 2, "int32", 7),
            ("additional_layer_depth", 3, "int32", 256),
        ]
    },
    "Hyperparams": {
        "enums": {"Activation": ["NONE", "RELU", "RELU_6"]},
        "fields": [
            ("regularizer", 2, "Regularizer"),
            ("activation", 4, "Hyperparams.Activation", "RELU"),
            ("batch_norm", 5, "BatchNorm"),
            ("regularize_depthwise", 6, "bool", False),
            ("group_norm", 7, "GroupNorm"),
        ],
        "oneofs": {"normalizer_oneof": ["batch_norm", "group_norm"]},
    },
    "Regularizer": {
        "fields": [
            ("l1_regularizer", 1, "L1Regularizer"),
            ("l2_regularizer", 2, "L2Regularizer"),
        ],
        "oneofs": {"regularizer_oneof": ["l1_regularizer", "l2_regularizer"]},
    },
    "L1Regularizer": {"fields": [("weight", 1, "float", 1.0)]},
    "L2Regularizer": {"fields": [("weight", 1, "float", 1.0)]},
    "BatchNorm": {
        "fields": [
            ("decay", 1, "float", 0.999),
            ("center", 2, "bool", True),
            ("scale", 3, "bool", False),
            ("epsilon", 4, "float", 0.001),
            ("train", 5, "bool", True),
        ]
    },
    "GroupNorm": {"fields": []},
    "ImageResizer": {
        "fields": [
            ("keep_aspect_ratio_resizer", 1, "KeepAspectRatioResizer"),
            ("fixed_shape_resizer", 2, "FixedShapeResizer"),
            ("identity_resizer", 3, "OtherResizer"),
            ("conditional_shape_resizer", 4, "OtherResizer"),
        ],
        "oneofs": {
            "image_resizer_oneof": [
                "keep_aspect_ratio_resizer",
                "fixed_shape_resizer",
                "identity_resizer",
                "conditional_shape_resizer",
            ]
        },
    },
    "OtherResizer": {"fields": []},
    "KeepAspectRatioResizer": {
        "fields": [
            ("min_dimension", 1, "int32", 600),
            ("max_dimension", 2, "int32", 1024),
            ("resize_method", 3, "ResizeType", "BILINEAR"),
            ("pad_to_max_dimension", 4, "bool", False),
            ("convert_to_grayscale", 5, "bool", False),
        ]
    },
    "FixedShapeResizer": {
        "fields": [
            ("height", 1, "int32", 300),
            ("width", 2, "int32", 300),
            ("resize_method", 3, "ResizeType", "BILINEAR"),
            ("convert_to_grayscale", 4, "bool", False),
        ]
    },
    "BoxCoder": {
        "fields": [
            ("faster_rcnn_box_coder", 1, "FasterRcnnBoxCoder"),
            ("mean_stddev_box_coder", 2, "OtherBoxCoder"),
            ("square_box_coder", 3, "OtherBoxCoder"),
            ("keypoint_box_coder", 4, "OtherBoxCoder"),
        ],
        "oneofs": {
            "box_coder_oneof": [
                "faster_rcnn_box_coder",
                "mean_stddev_box_coder",
                "square_box_coder",
                "keypoint_box_coder",
            ]
        },
    },
    "OtherBoxCoder": {"fields": []},
    "FasterRcnnBoxCoder": {
        "fields": [
            ("y_scale", 1, "float", 10.0),
            ("x_scale", 2, "float", 10.0),
            ("height_scale", 3, "float", 5.0),
            ("width_scale", 4, "float", 5.0),
        ]
    },
    "Matcher": {
        "fields": [
            ("argmax_matcher", 1, "ArgMaxMatcher"),
            ("bipartite_matcher", 2, "OtherMatcher"),
        ],
        "oneofs": {"matcher_oneof": ["argmax_matcher", "bipartite_matcher"]},
    },
    "OtherMatcher": {"fields": []},
    "ArgMaxMatcher": {
        "fields": [
            ("matched_threshold", 1, "float", 0.5),
            ("unmatched_threshold", 2, "float", 0.5),
            ("ignore_thresholds", 3, "bool", False),
            ("negatives_lower_than_unmatched", 4, "bool", True),
            ("force_match_for_each_row", 5, "bool", False),
            ("use_matmul_gather", 6, "bool", False),
        ]
    },
    "BoxPredictor": {
        "fields": [
            ("convolutional_box_predictor", 1, "ConvolutionalBoxPredictor"),
            ("mask_rcnn_box_predictor", 2, "MaskRCNNBoxPredictor"),
            ("rfcn_box_predictor", 3, "OtherBoxPredictor"),
            (
                "weight_shared_convolutional_box_predictor",
                4,
                "WeightSharedConvolutionalBoxPredictor",
            ),
        ],
        "oneofs": {
            "box_predictor_oneof": [
                "convolutional_box_predictor",
                "mask_rcnn_box_predictor",
                "rfcn_box_predictor",
                "weight_shared_convolutional_box_predictor",
            ]
        },
    },
    "OtherBoxPredictor": {"fields": []},
    "WeightSharedConvolutionalBoxPredictor": {
        "enums": {"ScoreConverter": ["IDENTITY", "SIGMOID"]},
        "fields": [
            ("conv_hyperparams", 1, "Hyperparams"),
            ("depth", 2, "int32", 0),
            ("num_layers_before_predictor", 4, "int32", 0),
            ("kernel_size", 7, "int32", 3),
            ("box_code_size", 8, "int32", 4),
            ("class_prediction_bias_init", 10, "float", 0.0),
            ("use_dropout", 11, "bool", False),
            ("dropout_keep_probability", 12, "float", 0.8),
            ("share_prediction_tower", 13, "bool", False),
            ("use_depthwise", 14, "bool", False),
            (
                "score_converter",
                16,
                "WeightSharedConvolutionalBoxPredictor.ScoreConverter",
                "IDENTITY",
            ),
            ("box_encodings_clip_range", 17, "OtherBoxPredictor"),
            ("apply_conv_hyperparams_to_heads", 19, "bool", False),
            ("apply_conv_hyperparams_pointwise", 20, "bool", False),
        ],
    },
    "MaskRCNNBoxPredictor": {
        "fields": [
            ("fc_hyperparams", 1, "Hyperparams"),
            ("use_dropout", 2, "bool", False),
            ("dropout_keep_probability", 3, "float", 0.5),
            ("box_code_size", 4, "int32", 4),
            ("predict_instance_masks", 6, "bool", False),
            ("predict_keypoints", 8, "bool", False),
            ("share_box_across_classes", 13, "bool", False),
        ]
    },
    "ConvolutionalBoxPredictor": {
        "fields": [
            ("conv_hyperparams", 1, "Hyperparams"),
            ("min_depth", 2, "int32", 0),
            ("max_depth", 3, "int32", 0),
            ("num_layers_before_predictor", 4, "int32", 0),
            ("use_dropout", 5, "bool", True),
            ("dropout_keep_probability", 6, "float", 0.8),
            ("kernel_size", 7, "int32", 1),
            ("box_code_size", 8, "int32", 4),
            ("apply_sigmoid_to_scores", 9, "bool", False),
            ("class_prediction_bias_init", 10, "float", 0.0),
            ("use_depthwise", 11, "bool", False),
        ]
    },
    "AnchorGenerator": {
        "fields": [
            ("grid_anchor_generator", 1, "GridAnchorGenerator"),
            ("ssd_anchor_generator", 2, "SsdAnchorGenerator"),
            ("multiscale_anchor_generator", 3, "MultiscaleAnchorGenerator"),
            ("flexible_grid_anchor_generator", 4, "OtherAnchorGenerator"),
        ],
        "oneofs": {
            "anchor_generator_oneof": [
                "grid_anchor_generator",
                "ssd_anchor_generator",
                "multiscale_anchor_generator",
                "flexible_grid_anchor_generator",
            ]
        },
    },
    "OtherAnchorGenerator": {"fields": []},
    "MultiscaleAnchorGenerator": {
        "fields": [
            ("min_level", 1, "int32", 3),
            ("max_level", 2, "int32", 7),
            ("anchor_scale", 3, "float", 4.0),
            ("aspect_ratios", 4, "float", None, True),
            ("scales_per_octave", 5, "int32", 2),
            ("normalize_coordinates", 6, "bool", True),
        ]
    },
    "GridAnchorGenerator": {
        "fields": [
            ("height", 1, "int32", 256),
            ("width", 2, "int32", 256),
            ("height_stride", 3, "int32", 16),
            ("width_stride", 4, "int32", 16),
            ("height_offset", 5, "int32", 0),
            ("width_offset", 6, "int32", 0),
            ("scales", 7, "float", None, True),
            ("aspect_ratios", 8, "float", None, True),
        ]
    },
    "SsdAnchorGenerator": {
        "fields": [
            ("num_layers", 1, "int32", 6),
            ("min_scale", 2, "float", 0.2),
            ("max_scale", 3, "float", 0.95),
            ("aspect_ratios", 4, "float", None, True),
            ("reduce_boxes_in_lowest_layer", 5, "bool", True),
            ("base_anchor_height", 6, "float", 1.0),
            ("base_anchor_width", 7, "float", 1.0),
            ("height_stride", 8, "int32", None, True),
            ("width_stride", 9, "int32", None, True),
            ("height_offset", 10, "int32", None, True),
            ("width_offset", 11, "int32", None, True),
            ("scales", 12, "float", None, True),
            ("interpolated_scale_aspect_ratio", 13, "float", 1.0),
        ]
    },
    "PostProcessing": {
        "enums": {"ScoreConverter": ["IDENTITY", "SIGMOID", "SOFTMAX"]},
        "fields": [
            ("batch_non_max_suppression", 1, "BatchNonMaxSuppression"),
            ("score_converter", 2, "PostProcessing.ScoreConverter", "IDENTITY"),
            ("logit_scale", 3, "float", 1.0),
            ("calibration_config", 4, "OtherCalibration"),
        ],
    },
    "OtherCalibration": {"fields": []},
    "BatchNonMaxSuppression": {
        "fields": [
            ("score_threshold", 1, "float", 0.0),
            ("iou_threshold", 2, "float", 0.6),
            ("max_detections_per_class", 3, "int32", 100),
            ("max_total_detections", 5, "int32", 100),
            ("use_static_shapes", 6, "bool", False),
            ("use_class_agnostic_nms", 7, "bool", False),
            ("max_classes_per_detection", 8, "int32", 1),
            ("soft_nms_sigma", 9, "float", 0.0),
            ("use_partitioned_nms", 10, "bool", False),
            ("use_combined_nms", 11, "bool", False),
        ]
    },
    "Loss": {
        "fields": [
            ("localization_loss", 1, "LocalizationLoss"),
            ("classification_loss", 2, "ClassificationLoss"),
            ("hard_example_miner", 3, "HardExampleMiner"),
            ("classification_weight", 4, "float", 1.0),
            ("localization_weight", 5, "float", 1.0),
        ]
    },
    "LocalizationLoss": {
        "fields": [
            ("weighted_l2", 1, "EmptyLoss"),
            ("weighted_smooth_l1", 2, "WeightedSmoothL1LocalizationLoss"),
            ("weighted_iou", 3, "EmptyLoss"),
        ],
        "oneofs": {"localization_loss": ["weighted_l2", "weighted_smooth_l1", "weighted_iou"]},
    },
    "EmptyLoss": {"fields": []},
    "WeightedSoftmaxClassificationLoss": {"fields": [("logit_scale", 2, "float", 1.0)]},
    "WeightedSmoothL1LocalizationLoss": {"fields": [("delta", 2, "float", 1.0)]},
    "ClassificationLoss": {
        "fields": [
            ("weighted_sigmoid", 1, "EmptyLoss"),
            ("weighted_softmax", 2, "WeightedSoftmaxClassificationLoss"),
            ("bootstrapped_sigmoid", 3, "EmptyLoss"),
            ("weighted_sigmoid_focal", 4, "SigmoidFocalClassificationLoss"),
            ("weighted_logits_softmax", 5, "EmptyLoss"),
        ],
        "oneofs": {
            "classification_loss": [
                "weighted_sigmoid",
                "weighted_softmax",
                "bootstrapped_sigmoid",
                "weighted_sigmoid_focal",
                "weighted_logits_softmax",
            ]
        },
    },
    "SigmoidFocalClassificationLoss": {
        "fields": [("gamma", 2, "float", 2.0), ("alpha", 3, "float", None)]
    },
    "HardExampleMiner": {
        "enums": {"LossType": ["BOTH", "CLASSIFICATION", "LOCALIZATION"]},
        "fields": [
            ("num_hard_examples", 1, "int32", 64),
            ("iou_threshold", 2, "float", 0.7),
            ("loss_type", 3, "HardExampleMiner.LossType", "BOTH"),
            ("max_negatives_per_positive", 4, "int32", 0),
            ("min_negatives_per_image", 5, "int32", 0),
        ],
    },
}

_TOP_LEVEL_ENUMS = {"ResizeType": ["BILINEAR", "NEAREST_NEIGHBOR", "BICUBIC", "AREA"]}


def _enum_names() -> set[str]:
    names = set(_TOP_LEVEL_ENUMS)
    for message, body in _MESSAGES.items():
        names.update(f"{message}.{enum}" for enum in body.get("enums", {}))
    return names


def _add_enum(target: Any, name: str, values: list[str] | dict[str, int]) -> None:
    """Values numbered 0.. in order, or {name: number} where the proto's numbering has gaps."""
    enum = target.add(name=name)
    numbered = values.items() if isinstance(values, dict) else map(reversed, enumerate(values))
    for value, number in numbered:
        enum.value.add(name=value, number=number)


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    enums = _enum_names()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{PACKAGE}.proto", package=PACKAGE, syntax="proto2"
    )
    for name, values in _TOP_LEVEL_ENUMS.items():
        _add_enum(file_proto.enum_type, name, values)
    for name, body in _MESSAGES.items():
        message = file_proto.message_type.add(name=name)
        for enum_name, values in body.get("enums", {}).items():
            _add_enum(message.enum_type, enum_name, values)
        oneof_index = {}
        for index, (oneof, members) in enumerate(body.get("oneofs", {}).items()):
            message.oneof_decl.add(name=oneof)
            oneof_index.update(dict.fromkeys(members, index))
        for entry in body["fields"]:
            field_name, number, type_name = entry[:3]
            default = entry[3] if len(entry) > 3 else None
            repeated = len(entry) > 4 and entry[4]
            field = message.field.add(
                name=field_name,
                number=number,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                field.type = _F.TYPE_ENUM if type_name in enums else _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_name}"
            if default is not None:
                field.default_value = (
                    str(default).lower() if isinstance(default, bool) else str(default)
                )
            if field_name in oneof_index:
                field.oneof_index = oneof_index[field_name]
    return file_proto


@cache
def message_class(name: str = "TrainEvalPipelineConfig") -> type:
    """The generated message class for one of the declared messages."""
    pool = _pool()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return pool
