"""TF1 OD API data augmentation (`train_config.data_augmentation_options`) in TF2.

Each option computes what `object_detection/core/preprocessor.py` computes (OD API 2.8, the
functions `object_detection/builders/preprocessor_builder.py` maps the option to), on one float32
[H, W, 3] image with 0..255 values, its normalised [N, 4] boxes and their [N] labels, in the
config's order and before the model's resize, as TF1's `inputs.augment_input_data` applies them.

Every op is split into `draw` (its random values: TF1's `tf.random_uniform` /
`sample_distorted_bounding_box` draws, here stateless functions of a seed) and `apply` (the
deterministic rest, given those values). Tests feed the draws to the TF1 OD API's own functions
through its `preprocess_vars_cache` and compare the outputs.

Seeds: the input pipeline passes (seed, example index). Option 0 of the list draws from that seed
itself (its first draw is the stream the random flip always used); option k > 0 from
`fold_in(fold_in(seed, 0), k)`; draw j > 0 of an option from `fold_in(option seed, j)`. A resumed
run therefore augments every example exactly as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipeline.errors import PipelineError

Draws = dict[str, tf.Tensor]
Example = tuple[
    tf.Tensor, tf.Tensor, tf.Tensor
]  # image [H, W, 3] float32, boxes [N, 4], labels [N]

CONFIG_FIELD = "train_config.data_augmentation_options"
OVERRIDE_HINT = (
    "leave it out with `-S 'train.augmentation.skip=[{name}]'`, or list the options to apply with "
    "`-S train.augmentation.from_pipeline_config=false -S 'train.augmentation.options=[...]'`"
)


@dataclasses.dataclass(frozen=True)
class Step:
    """One data_augmentation_options entry: the option's name and its TF1 function arguments."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


# ---- random draws ----------------------------------------------------------------------------


def step_seed(seed: tf.Tensor, position: int) -> tf.Tensor:
    """The seed of option `position` of the list, from the example's (seed, index) seed."""
    seed = tf.convert_to_tensor(seed, tf.int64)
    if position == 0:
        return seed
    parent = tf.random.experimental.stateless_fold_in(seed, 0)
    return tf.random.experimental.stateless_fold_in(parent, position)


def _sub(seed: tf.Tensor, j: int) -> tf.Tensor:
    return seed if j == 0 else tf.random.experimental.stateless_fold_in(seed, j)


def _uniform(seed: tf.Tensor, j: int, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform([], _sub(seed, j), minval=minval, maxval=maxval)


def _integer(seed: tf.Tensor, j: int, minval: tf.Tensor, maxval: tf.Tensor) -> tf.Tensor:
    """TF1 `_random_integer`: uniform in [minval, maxval)."""
    return tf.random.stateless_uniform(
        [], _sub(seed, j), minval=minval, maxval=maxval, dtype=tf.int32
    )


# ---- box helpers (object_detection/core/box_list_ops.py) ------------------------------------


def change_coordinate_frame(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """box_list_ops.change_coordinate_frame: subtract the window's corner, scale by 1/size."""
    win_height = window[2] - window[0]
    win_width = window[3] - window[1]
    shifted = boxes - tf.stack([window[0], window[1], window[0], window[1]])
    y_scale = 1.0 / win_height
    x_scale = 1.0 / win_width
    y_min, x_min, y_max, x_max = tf.split(shifted, 4, axis=1)
    return tf.concat([y_scale * y_min, x_scale * x_min, y_scale * y_max, x_scale * x_max], 1)


def _prune_completely_outside_window(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Indices of the boxes that touch the window's inside."""
    y_min, x_min, y_max, x_max = tf.split(boxes, 4, axis=1)
    win_y_min, win_x_min, win_y_max, win_x_max = tf.unstack(window)
    violations = tf.concat(
        [
            tf.greater_equal(y_min, win_y_max),
            tf.greater_equal(x_min, win_x_max),
            tf.less_equal(y_max, win_y_min),
            tf.less_equal(x_max, win_x_min),
        ],
        1,
    )
    return tf.reshape(tf.where(tf.logical_not(tf.reduce_any(violations, 1))), [-1])


def _ioa_of_window(window: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """box_list_ops.ioa(window, boxes) reduced over the one window: each box's area fraction
    inside the window."""
    y_min1, x_min1, y_max1, x_max1 = tf.split(window[None], 4, axis=1)
    y_min2, x_min2, y_max2, x_max2 = tf.split(boxes, 4, axis=1)
    heights = tf.maximum(
        0.0,
        tf.minimum(y_max1, tf.transpose(y_max2)) - tf.maximum(y_min1, tf.transpose(y_min2)),
    )
    widths = tf.maximum(
        0.0,
        tf.minimum(x_max1, tf.transpose(x_max2)) - tf.maximum(x_min1, tf.transpose(x_min2)),
    )
    areas = tf.squeeze((y_max2 - y_min2) * (x_max2 - x_min2), [1])
    return tf.reduce_max(tf.truediv(heights * widths, tf.expand_dims(areas, 0)), axis=0)


# ---- options ---------------------------------------------------------------------------------


class Op:
    """An option: `draw(args, seed, image, boxes)`, `apply(args, draws, image, boxes, labels)`."""

    # Only moves pixels (flip, crop): exact on the decoded uint8 image, which is 4x smaller than
    # the float32 one TF1 works on; the first other option casts.
    moves_pixels_only = False

    @staticmethod
    def arguments(config: Any) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def draw(args: dict[str, Any], seed: tf.Tensor, image: tf.Tensor, boxes: tf.Tensor) -> Draws:
        raise NotImplementedError

    @staticmethod
    def apply(args: dict[str, Any], draws: Draws, image, boxes, labels) -> Example:
        raise NotImplementedError


def _set_fields(config: Any) -> dict[str, Any]:
    """preprocessor_builder._get_dict_from_proto: the fields set in the config (the TF1 function's
    own defaults apply to the others)."""
    return {field.name: value for field, value in config.ListFields()}


def _flip_op(transform: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]], field: str):
    """random_{horizontal,vertical}_flip / random_rotation90: one uniform draw; `transform` the
    image and the boxes when it is below `probability`."""

    class FlipOp(Op):
        moves_pixels_only = True

        @staticmethod
        def arguments(config):
            if getattr(config, field):
                raise ValueError(f"{field} is set (keypoints are not trained)")
            return {"probability": float(config.probability)}

        @staticmethod
        def draw(args, seed, image, boxes):
            return {"flip": _uniform(seed, 0)}

        @staticmethod
        def apply(args, draws, image, boxes, labels):
            do_flip = tf.less(draws["flip"], tf.cast(args["probability"], tf.float32))
            image, boxes = tf.cond(do_flip, lambda: transform(image, boxes), lambda: (image, boxes))
            return image, boxes, labels

    return FlipOp


def horizontal_flip(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """TF1 `random_horizontal_flip`'s transform: mirror the image and the normalised boxes."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
    return tf.image.flip_left_right(image), flipped


def vertical_flip(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """TF1 `random_vertical_flip`'s transform (`_flip_boxes_up_down`)."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([1.0 - ymax, xmin, 1.0 - ymin, xmax], axis=-1)
    return tf.image.flip_up_down(image), flipped


def rotate90(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """TF1 `random_rotation90`'s transform: 90 degrees counter-clockwise (`_rot90_boxes`)."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    rotated = tf.stack([1.0 - xmax, ymin, 1.0 - xmin, ymax], axis=-1)
    return tf.image.rot90(image), rotated


RandomHorizontalFlip = _flip_op(horizontal_flip, "keypoint_flip_permutation")
RandomVerticalFlip = _flip_op(vertical_flip, "keypoint_flip_permutation")
RandomRotation90 = _flip_op(rotate90, "keypoint_rot_permutation")


class RandomPixelValueScale(Op):
    @staticmethod
    def arguments(config):
        return _set_fields(config)

    @staticmethod
    def draw(args, seed, image, boxes):
        low, high = float(args.get("minval", 0.9)), float(args.get("maxval", 1.1))
        return {"color_coef": tf.random.stateless_uniform(tf.shape(image), seed, low, high)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        return tf.clip_by_value(image * draws["color_coef"], 0.0, 255.0), boxes, labels


# random_jitter_boxes: jitter_mode -> (ratio range sign, symmetric?, same ratio for x and y?)
_JITTER_MODES = {
    "default": ((-1, 1), False, False),
    "expand": ((0, 1), False, False),
    "shrink": ((-1, 0), False, False),
    "expand_symmetric": ((0, 1), True, False),
    "shrink_symmetric": ((-1, 0), True, False),
    "expand_symmetric_xy": ((0, 1), True, True),
    "shrink_symmetric_xy": ((-1, 0), True, True),
}


class RandomJitterBoxes(Op):
    """Moves box corners only. TF1 draws `tf.random.uniform` without the preprocessor cache, so
    the tests feed TF1 the same uniform values by patching that function."""

    @staticmethod
    def arguments(config):
        mode = type(config).JitterMode.Name(config.jitter_mode).lower()
        return {"ratio": float(config.ratio), "jitter_mode": mode}

    @staticmethod
    def draw(args, seed, image, boxes):
        (low, high), symmetric, _ = _JITTER_MODES[args["jitter_mode"]]
        shape = [tf.shape(boxes)[0], 2 if symmetric else 4]
        ratio = args["ratio"]
        return {"jitter": tf.random.stateless_uniform(shape, seed, low * ratio, high * ratio)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        _, symmetric, same_xy = _JITTER_MODES[args["jitter_mode"]]
        ymin, xmin, ymax, xmax = tf.unstack(tf.transpose(boxes))
        height, width = ymax - ymin, xmax - xmin  # BoxList.get_center_coordinates_and_sizes
        ycenter, xcenter = ymin + height / 2.0, xmin + width / 2.0
        height = tf.maximum(tf.abs(height), 1e-6)
        width = tf.maximum(tf.abs(width), 1e-6)
        distortion = 1.0 + draws["jitter"]
        if symmetric:
            height_distortion, width_distortion = distortion[:, 0], distortion[:, 1]
            max_height = tf.abs(tf.minimum((2.0 * ycenter) / height, 2.0 * (1 - ycenter) / height))
            max_width = tf.abs(tf.minimum((2.0 * xcenter) / width, 2.0 * (1 - xcenter) / width))
            if same_xy:
                height_distortion = width_distortion = distortion[:, 0]
                max_height = max_width = tf.minimum(max_width, max_height)
            height_distortion = tf.clip_by_value(height_distortion, -max_height, max_height)
            width_distortion = tf.clip_by_value(width_distortion, -max_width, max_width)
            ymin = ycenter - (height * height_distortion / 2.0)
            ymax = ycenter + (height * height_distortion / 2.0)
            xmin = xcenter - (width * width_distortion / 2.0)
            xmax = xcenter + (width * width_distortion / 2.0)
        else:
            ymin = ycenter - (height * distortion[:, 0] / 2.0)
            xmin = xcenter - (width * distortion[:, 1] / 2.0)
            ymax = ycenter + (height * distortion[:, 2] / 2.0)
            xmax = xcenter + (width * distortion[:, 3] / 2.0)
        boxes = tf.stack([ymin, xmin, ymax, xmax], axis=1)
        return image, tf.clip_by_value(boxes, 0.0, 1.0), labels


def _color_op(adjust: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], key: str, symmetric: bool):
    """random_adjust_{brightness,contrast,hue,saturation}: one uniform draw, the tf.image
    adjustment on image/255, times 255, clipped to 0..255."""

    class ColorOp(Op):
        @staticmethod
        def arguments(config):
            return _set_fields(config)

        @staticmethod
        def draw(args, seed, image, boxes):
            return {key: color_draw(args, seed, 0, symmetric, key)}

        @staticmethod
        def apply(args, draws, image, boxes, labels):
            return color_apply(adjust, image, draws[key]), boxes, labels

    return ColorOp


_COLOR_DEFAULTS = {
    "delta_brightness": (None, 0.2),
    "delta_hue": (None, 0.02),
    "contrast_factor": (0.8, 1.25),
    "saturation_factor": (0.8, 1.25),
}


def color_draw(args: dict[str, Any], seed: tf.Tensor, j: int, symmetric: bool, key: str):
    low, high = _COLOR_DEFAULTS[key]
    high = float(args.get("max_delta", high))
    low = -high if symmetric else float(args.get("min_delta", low))
    return _uniform(seed, j, low, high)


def color_apply(adjust, image: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(adjust(image / 255, value) * 255, 0.0, 255.0)


RandomAdjustBrightness = _color_op(tf.image.adjust_brightness, "delta_brightness", True)
RandomAdjustContrast = _color_op(tf.image.adjust_contrast, "contrast_factor", False)
RandomAdjustHue = _color_op(tf.image.adjust_hue, "delta_hue", True)
RandomAdjustSaturation = _color_op(tf.image.adjust_saturation, "saturation_factor", False)

# random_distort_color: TF1's fixed sub-ops, (adjustment, draw key, (min, max) argument) in order.
_DISTORT_ORDERINGS = {
    0: ("delta_brightness", "saturation_factor", "delta_hue", "contrast_factor"),
    1: ("delta_brightness", "contrast_factor", "saturation_factor", "delta_hue"),
}
_DISTORT_ARGS = {
    "delta_brightness": (tf.image.adjust_brightness, True, {"max_delta": 32.0 / 255.0}),
    "saturation_factor": (tf.image.adjust_saturation, False, {"min_delta": 0.5, "max_delta": 1.5}),
    "delta_hue": (tf.image.adjust_hue, True, {"max_delta": 0.2}),
    "contrast_factor": (tf.image.adjust_contrast, False, {"min_delta": 0.5, "max_delta": 1.5}),
}


class RandomDistortColor(Op):
    @staticmethod
    def arguments(config):
        ordering = int(config.color_ordering)
        if ordering not in _DISTORT_ORDERINGS:
            raise ValueError(f"color_ordering is {ordering}; TF1 accepts 0 or 1")
        return {"color_ordering": ordering}

    @staticmethod
    def draw(args, seed, image, boxes):
        order = _DISTORT_ORDERINGS[args["color_ordering"]]
        return {
            key: color_draw(_DISTORT_ARGS[key][2], seed, j, _DISTORT_ARGS[key][1], key)
            for j, key in enumerate(order)
        }

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        for key in _DISTORT_ORDERINGS[args["color_ordering"]]:
            image = color_apply(_DISTORT_ARGS[key][0], image, draws[key])
        return image, boxes, labels


def rgb_to_gray3(image: tf.Tensor) -> tf.Tensor:
    """preprocessor._rgb_to_grayscale then tf.image.grayscale_to_rgb (float32 input)."""
    gray = tf.reduce_sum(image * [0.2989, 0.5870, 0.1140], -1, keepdims=True)
    return tf.image.grayscale_to_rgb(gray)


class RandomRGBtoGray(Op):
    @staticmethod
    def arguments(config):
        return _set_fields(config)

    @staticmethod
    def draw(args, seed, image, boxes):
        return {"gray": _uniform(seed, 0)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        probability = tf.cast(args.get("probability", 0.1), tf.float32)
        image = tf.cond(
            tf.greater(draws["gray"], probability), lambda: image, lambda: rgb_to_gray3(image)
        )
        return image, boxes, labels


class RandomBlackPatches(Op):
    @staticmethod
    def arguments(config):
        return _set_fields(config)

    @staticmethod
    def _settings(args):
        return (
            int(args.get("max_black_patches", 10)),
            float(args.get("probability", 0.5)),
            float(args.get("size_to_image_ratio", 0.1)),
        )

    @staticmethod
    def draw(args, seed, image, boxes):
        count, _, ratio = RandomBlackPatches._settings(args)
        draws = {}
        for idx in range(count):
            draws[f"patch{idx}"] = _uniform(seed, 3 * idx)
            draws[f"patch{idx}_y"] = _uniform(seed, 3 * idx + 1, 0.0, 1.0 - ratio)
            draws[f"patch{idx}_x"] = _uniform(seed, 3 * idx + 2, 0.0, 1.0 - ratio)
        return draws

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        count, probability, ratio = RandomBlackPatches._settings(args)

        def add_patch(image, idx):
            shape = tf.shape(image)
            height, width = shape[0], shape[1]
            height_f = tf.cast(height, tf.float32)
            width_f = tf.cast(width, tf.float32)
            box_size = tf.cast(tf.minimum(height_f, width_f) * ratio, tf.int32)
            y_min = tf.cast(draws[f"patch{idx}_y"] * height_f, tf.int32)
            x_min = tf.cast(draws[f"patch{idx}_x"] * width_f, tf.int32)
            black = tf.ones([box_size, box_size, 3], tf.float32)
            mask = 1.0 - tf.image.pad_to_bounding_box(black, y_min, x_min, height, width)
            return image * mask

        for idx in range(count):
            image = tf.cond(
                tf.greater(draws[f"patch{idx}"], tf.cast(probability, tf.float32)),
                lambda image=image: image,
                lambda image=image, idx=idx: add_patch(image, idx),
            )
        return image, boxes, labels


class RandomImageScale(Op):
    @staticmethod
    def arguments(config):
        return _set_fields(config)

    @staticmethod
    def draw(args, seed, image, boxes):
        low = float(args.get("min_scale_ratio", 0.5))
        high = float(args.get("max_scale_ratio", 2.0))
        return {"size_coef": _uniform(seed, 0, low, high)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        shape = tf.shape(image)
        size = tf.cast(
            tf.cast(tf.stack([shape[0], shape[1]]), tf.float32) * draws["size_coef"], tf.int32
        )
        # tf.compat.v1 resize_images(align_corners=True): ResizeBilinear, no half-pixel centers.
        resized = tf.raw_ops.ResizeBilinear(
            images=image[None], size=size, align_corners=True, half_pixel_centers=False
        )
        return resized[0], boxes, labels


class RandomPadImage(Op):
    @staticmethod
    def arguments(config):
        for kind in ("min", "max"):
            if config.HasField(f"{kind}_image_height") != config.HasField(f"{kind}_image_width"):
                raise ValueError(f"set both or neither of {kind}_image_height / _width")
        args: dict[str, Any] = {}
        for kind in ("min", "max"):
            if config.HasField(f"{kind}_image_height"):
                height = int(getattr(config, f"{kind}_image_height"))
                width = int(getattr(config, f"{kind}_image_width"))
                args[f"{kind}_image_size"] = (height, width)
        if config.pad_color:
            if len(config.pad_color) != 3:
                raise ValueError(f"pad_color has {len(config.pad_color)} values; give 3 (RGB)")
            args["pad_color"] = tuple(float(c) for c in config.pad_color)
        return args

    @staticmethod
    def draw(args, seed, image, boxes):
        size = tf.shape(image)[:2]
        return pad_draw(seed, 0, size, args.get("min_image_size"), args.get("max_image_size"))

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        return (*pad_apply(draws, image, boxes, args.get("pad_color")), labels)


def pad_draw(seed: tf.Tensor, first: int, size: tf.Tensor, min_size, max_size) -> Draws:
    """random_pad_image's draws for an image of `size` (draws first.. first+3 of `seed`); sizes
    default to 1x and 2x the image and are never below it."""
    max_size = size * 2 if max_size is None else tf.cast(max_size, tf.int32)
    max_size = tf.maximum(max_size, size)
    min_size = size if min_size is None else tf.cast(min_size, tf.int32)
    min_size = tf.maximum(min_size, size)
    target = [
        tf.cond(
            max_size[i] > min_size[i],
            lambda i=i: _integer(seed, first + i, min_size[i], max_size[i]),
            lambda i=i: max_size[i],
        )
        for i in (0, 1)
    ]
    offset = [
        tf.cond(
            target[i] > size[i],
            lambda i=i: _integer(seed, first + 2 + i, 0, target[i] - size[i]),
            lambda: tf.constant(0, tf.int32),
        )
        for i in (0, 1)
    ]
    return {
        "target_height": target[0],
        "target_width": target[1],
        "offset_height": offset[0],
        "offset_width": offset[1],
    }


def pad_apply(draws: Draws, image, boxes, pad_color) -> tuple[tf.Tensor, tf.Tensor]:
    """random_pad_image given its draws: the image placed on a canvas of `pad_color` (its mean
    colour when None), the boxes re-expressed in the canvas."""
    pad_color = (
        tf.reduce_mean(image, axis=[0, 1])
        if pad_color is None
        else tf.constant(pad_color, tf.float32)
    )
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    th, tw = draws["target_height"], draws["target_width"]
    oh, ow = draws["offset_height"], draws["offset_width"]
    new_image = tf.image.pad_to_bounding_box(image, oh, ow, th, tw)
    ones = tf.image.pad_to_bounding_box(tf.ones_like(image), oh, ow, th, tw)
    new_image += (1.0 - ones) * pad_color
    window = tf.cast(tf.stack([-oh, -ow, th - oh, tw - ow]), tf.float32)
    window /= tf.cast(tf.stack([height, width, height, width]), tf.float32)
    return new_image, change_coordinate_frame(boxes, window)


# ---- crops -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CropCase:
    """The arguments of one TF1 `random_crop_image` call."""

    min_object_covered: float = 1.0
    aspect_ratio_range: tuple[float, float] = (0.75, 1.33)
    area_range: tuple[float, float] = (0.1, 1.0)
    overlap_thresh: float = 0.3
    clip_boxes: bool = True
    random_coef: float = 0.0


def _crop_window(case: CropCase, seed: tf.Tensor, image: tf.Tensor, boxes: tf.Tensor) -> Draws:
    """_strict_random_crop_image's sample_distorted_bounding_box (stateless, same kernel)."""
    begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.expand_dims(tf.clip_by_value(boxes, 0.0, 1.0), 1),
        seed=seed,
        min_object_covered=tf.constant(case.min_object_covered, tf.float32),
        aspect_ratio_range=case.aspect_ratio_range,
        area_range=case.area_range,
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
    )
    return {"crop_begin": begin, "crop_size": size, "crop_window": window}


def strict_crop(case: CropCase, draws: Draws, image, boxes, labels) -> Example:
    """_strict_random_crop_image given its window: crop, drop the boxes outside the window or
    less than overlap_thresh inside it, re-express the rest in the window's frame (clipped)."""
    begin = draws["crop_begin"]
    end = begin + draws["crop_size"]
    new_image = image[begin[0] : end[0], begin[1] : end[1], :]
    window = tf.reshape(draws["crop_window"], [4])
    inside = _prune_completely_outside_window(boxes, window)
    boxes, labels = tf.gather(boxes, inside), tf.gather(labels, inside)
    keep = tf.squeeze(
        tf.where(tf.greater_equal(_ioa_of_window(window, boxes), case.overlap_thresh)), [1]
    )
    boxes, labels = tf.gather(boxes, keep), tf.gather(labels, keep)
    new_boxes = change_coordinate_frame(boxes, window)
    if case.clip_boxes:
        new_boxes = tf.clip_by_value(new_boxes, 0.0, 1.0)
    return new_image, new_boxes, labels


def random_crop(case: CropCase, draws: Draws, image, boxes, labels) -> Example:
    """random_crop_image given its draws: crop unless random_coef's draw says keep."""
    if case.random_coef < sys.float_info.min:
        return strict_crop(case, draws, image, boxes, labels)
    return tf.cond(
        tf.greater(draws["crop_coef"], tf.cast(case.random_coef, tf.float32)),
        lambda: strict_crop(case, draws, image, boxes, labels),
        lambda: (image, boxes, labels),
    )


class RandomCropImage(Op):
    moves_pixels_only = True

    @staticmethod
    def arguments(config):
        return {"case": _crop_case(config)}

    @staticmethod
    def draw(args, seed, image, boxes):
        case = args["case"]
        return {"crop_coef": _uniform(seed, 1), **_crop_window(case, _sub(seed, 2), image, boxes)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        return random_crop(args["case"], draws, image, boxes, labels)


def _crop_case(config: Any) -> CropCase:
    return CropCase(
        min_object_covered=float(config.min_object_covered),
        aspect_ratio_range=(float(config.min_aspect_ratio), float(config.max_aspect_ratio)),
        area_range=(float(config.min_area), float(config.max_area)),
        overlap_thresh=float(config.overlap_thresh),
        clip_boxes=bool(config.clip_boxes),
        random_coef=float(config.random_coef),
    )


# ssd_random_crop without operations: the TF1 function's defaults.
SSD_DEFAULT_CASES = tuple(
    CropCase(covered, (0.5, 2.0), (0.1, 1.0), covered, True, 0.15)
    for covered in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
)


class SSDRandomCrop(Op):
    moves_pixels_only = True

    @staticmethod
    def arguments(config):
        cases = tuple(_crop_case(op) for op in config.operations) or SSD_DEFAULT_CASES
        return {"cases": cases}

    @staticmethod
    def draw(args, seed, image, boxes):
        window_seed = _sub(seed, 2)
        draws = _select_case(
            seed, args["cases"], lambda case: _crop_window(case, window_seed, image, boxes)
        )
        return {**draws, "crop_coef": _uniform(seed, 1)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        cases = args["cases"]
        branches = [
            lambda case=case: random_crop(case, draws, image, boxes, labels) for case in cases
        ]
        image, boxes, labels = tf.switch_case(draws["case"], branches)
        return image, boxes, labels


def _no_labels(boxes: tf.Tensor) -> tf.Tensor:
    return tf.zeros(tf.shape(boxes)[:1], tf.int32)


def _padded_size_ratio(values: Sequence[float], name: str, default: tuple[float, float]):
    if not values:
        return default
    if len(values) != 2:
        raise ValueError(f"{name} has {len(values)} values; give 2 (height, width) or none")
    return (float(values[0]), float(values[1]))


@dataclasses.dataclass(frozen=True)
class CropPadCase:
    """The arguments of one TF1 `random_crop_pad_image` call: a crop, then a pad to between
    min_padded_size_ratio and max_padded_size_ratio of the image *before* the crop."""

    crop: CropCase = CropCase()
    min_padded_size_ratio: tuple[float, float] = (1.0, 1.0)
    max_padded_size_ratio: tuple[float, float] = (2.0, 2.0)
    pad_color: tuple[float, float, float] | None = None


def _crop_pad_draw(case: CropPadCase, seed: tf.Tensor, crop_draws: Draws, image, boxes) -> Draws:
    """The pad draws of random_crop_pad_image, on the image its crop draws give."""
    cropped = random_crop(case.crop, crop_draws, image, boxes, _no_labels(boxes))[0]
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    min_size = tf.cast(size * case.min_padded_size_ratio, tf.int32)
    max_size = tf.cast(size * case.max_padded_size_ratio, tf.int32)
    return pad_draw(seed, 3, tf.shape(cropped)[:2], min_size, max_size)


def crop_pad(case: CropPadCase, draws: Draws, image, boxes, labels) -> Example:
    image, boxes, labels = random_crop(case.crop, draws, image, boxes, labels)
    return (*pad_apply(draws, image, boxes, case.pad_color), labels)


class RandomCropPadImage(Op):
    @staticmethod
    def arguments(config):
        pad_color = None
        if config.pad_color:
            if len(config.pad_color) != 3:
                raise ValueError(f"pad_color has {len(config.pad_color)} values; give 3 (RGB)")
            pad_color = tuple(float(c) for c in config.pad_color)
        case = CropPadCase(
            _crop_case(config),
            _padded_size_ratio(config.min_padded_size_ratio, "min_padded_size_ratio", (1.0, 1.0)),
            _padded_size_ratio(config.max_padded_size_ratio, "max_padded_size_ratio", (2.0, 2.0)),
            pad_color,
        )
        return {"case": case}

    @staticmethod
    def draw(args, seed, image, boxes):
        case = args["case"]
        draws = RandomCropImage.draw({"case": case.crop}, seed, image, boxes)
        return {**draws, **_crop_pad_draw(case, seed, draws, image, boxes)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        return crop_pad(args["case"], draws, image, boxes, labels)


# ssd_random_crop_pad without operations: the TF1 function's defaults.
SSD_PAD_DEFAULT_CASES = tuple(
    CropPadCase(CropCase(covered, (0.5, 2.0), (0.1, 1.0), covered, True, 0.15))
    for covered in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
)


def _select_case(seed: tf.Tensor, cases: Sequence[Any], draw_case: Callable[[Any], Draws]):
    """_apply_with_random_selector_tuples: a uniform case index (draw 0), then that case's draws."""
    selected = _integer(seed, 0, 0, len(cases))
    draws = tf.switch_case(selected, [lambda case=case: draw_case(case) for case in cases])
    return {"case": selected, **draws}


class SSDRandomCropPad(Op):
    @staticmethod
    def arguments(config):
        cases = tuple(
            CropPadCase(
                _crop_case(op),
                _padded_size_ratio(op.min_padded_size_ratio, "min_padded_size_ratio", ()),
                _padded_size_ratio(op.max_padded_size_ratio, "max_padded_size_ratio", ()),
                (float(op.pad_color_r), float(op.pad_color_g), float(op.pad_color_b)),
            )
            for op in config.operations
        )
        for case in cases:
            if not case.min_padded_size_ratio or not case.max_padded_size_ratio:
                raise ValueError(
                    "an operation leaves min_padded_size_ratio or max_padded_size_ratio unset "
                    "(TF1 needs both, 2 values each)"
                )
        return {"cases": cases or SSD_PAD_DEFAULT_CASES}

    @staticmethod
    def draw(args, seed, image, boxes):
        crop_coef = _uniform(seed, 1)
        window_seed = _sub(seed, 2)

        def draw_case(case):
            draws = {"crop_coef": crop_coef, **_crop_window(case.crop, window_seed, image, boxes)}
            return {**draws, **_crop_pad_draw(case, seed, draws, image, boxes)}

        return {"crop_coef": crop_coef, **_select_case(seed, args["cases"], draw_case)}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        branches = [
            lambda case=case: crop_pad(case, draws, image, boxes, labels) for case in args["cases"]
        ]
        return tf.switch_case(draws["case"], branches)


def _aspect_crop_size(image: tf.Tensor, aspect_ratio: float) -> tuple[tf.Tensor, tf.Tensor]:
    """random_crop_to_aspect_ratio's crop: the largest of the aspect ratio inside the image."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    image_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    ratio = tf.constant(aspect_ratio, tf.float32)
    target_height = tf.cond(
        image_ratio >= ratio,
        lambda: height,
        lambda: tf.cast(tf.round(tf.cast(width, tf.float32) / ratio), tf.int32),
    )
    target_width = tf.cond(
        image_ratio <= ratio,
        lambda: width,
        lambda: tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32),
    )
    return target_height, target_width


def _aspect_crop_draw(seed: tf.Tensor, first: int, image: tf.Tensor, aspect_ratio: float) -> Draws:
    shape = tf.shape(image)
    target_height, target_width = _aspect_crop_size(image, aspect_ratio)
    return {
        "aspect_offset_height": _integer(seed, first, 0, shape[0] - target_height + 1),
        "aspect_offset_width": _integer(seed, first + 1, 0, shape[1] - target_width + 1),
    }


def aspect_crop(args: dict[str, Any], draws: Draws, image, boxes, labels) -> Example:
    """random_crop_to_aspect_ratio given its offsets: crop, keep the boxes at least
    overlap_thresh inside (prune_non_overlapping_boxes), re-express them in the crop, clip and
    drop the empty ones (clip_to_window)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    target_height, target_width = _aspect_crop_size(image, args["aspect_ratio"])
    oh, ow = draws["aspect_offset_height"], draws["aspect_offset_width"]
    new_image = tf.image.crop_to_bounding_box(image, oh, ow, target_height, target_width)
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    window = tf.cast(tf.stack([oh, ow, oh + target_height, ow + target_width]), tf.float32) / size
    keep = tf.squeeze(
        tf.where(tf.greater_equal(_ioa_of_window(window, boxes), args["overlap_thresh"])), [1]
    )
    boxes, labels = tf.gather(boxes, keep), tf.gather(labels, keep)
    boxes = change_coordinate_frame(boxes, window)
    if args["clip_boxes"]:
        y_min, x_min, y_max, x_max = tf.split(boxes, 4, axis=1)
        boxes = tf.concat(
            [tf.maximum(tf.minimum(c, 1.0), 0.0) for c in (y_min, x_min, y_max, x_max)], 1
        )
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        nonempty = tf.reshape(tf.where(tf.greater(areas, 0.0)), [-1])
        boxes, labels = tf.gather(boxes, nonempty), tf.gather(labels, nonempty)
    return new_image, boxes, labels


class RandomCropToAspectRatio(Op):
    moves_pixels_only = True

    @staticmethod
    def arguments(config):
        if config.aspect_ratio <= 0:
            raise ValueError(f"aspect_ratio is {config.aspect_ratio}; give a width/height > 0")
        return {
            "aspect_ratio": float(config.aspect_ratio),
            "overlap_thresh": float(config.overlap_thresh),
            "clip_boxes": bool(config.clip_boxes),
        }

    @staticmethod
    def draw(args, seed, image, boxes):
        return _aspect_crop_draw(seed, 0, image, args["aspect_ratio"])

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        return aspect_crop(args, draws, image, boxes, labels)


class SSDRandomCropFixedAspectRatio(Op):
    """ssd_random_crop with every case's aspect ratio fixed, then random_crop_to_aspect_ratio
    (overlap 0.3, always clipped: TF1 passes it the truthy clip_boxes tuple)."""

    moves_pixels_only = True

    @staticmethod
    def arguments(config):
        if not config.operations:  # the builder passes no arguments: the function's defaults
            ratio = 1.0
            cases = tuple(
                dataclasses.replace(case, aspect_ratio_range=(ratio, ratio))
                for case in SSD_DEFAULT_CASES
            )
        else:
            ratio = float(config.aspect_ratio)
            cases = tuple(
                CropCase(
                    min_object_covered=float(op.min_object_covered),
                    aspect_ratio_range=(ratio, ratio),
                    area_range=(float(op.min_area), float(op.max_area)),
                    overlap_thresh=float(op.overlap_thresh),
                    clip_boxes=bool(op.clip_boxes),
                    random_coef=float(op.random_coef),
                )
                for op in config.operations
            )
        aspect = {"aspect_ratio": ratio, "overlap_thresh": 0.3, "clip_boxes": True}
        return {"cases": cases, "aspect": aspect}

    @staticmethod
    def draw(args, seed, image, boxes):
        draws = SSDRandomCrop.draw(args, seed, image, boxes)
        cropped = SSDRandomCrop.apply(args, draws, image, boxes, _no_labels(boxes))[0]
        return {**draws, **_aspect_crop_draw(seed, 3, cropped, args["aspect"]["aspect_ratio"])}

    @staticmethod
    def apply(args, draws, image, boxes, labels):
        image, boxes, labels = SSDRandomCrop.apply(args, draws, image, boxes, labels)
        return aspect_crop(args["aspect"], draws, image, boxes, labels)


OPS: dict[str, type[Op]] = {
    "random_horizontal_flip": RandomHorizontalFlip,
    "ssd_random_crop": SSDRandomCrop,
    "random_adjust_brightness": RandomAdjustBrightness,
    "random_adjust_contrast": RandomAdjustContrast,
    "random_adjust_hue": RandomAdjustHue,
    "random_adjust_saturation": RandomAdjustSaturation,
    "random_distort_color": RandomDistortColor,
    "random_rgb_to_gray": RandomRGBtoGray,
    "random_black_patches": RandomBlackPatches,
    "random_pad_image": RandomPadImage,
    "random_image_scale": RandomImageScale,
    "random_crop_image": RandomCropImage,
    "random_vertical_flip": RandomVerticalFlip,
    "random_rotation90": RandomRotation90,
    "random_pixel_value_scale": RandomPixelValueScale,
    "random_jitter_boxes": RandomJitterBoxes,
    "random_crop_pad_image": RandomCropPadImage,
    "ssd_random_crop_pad": SSDRandomCropPad,
    "random_crop_to_aspect_ratio": RandomCropToAspectRatio,
    "ssd_random_crop_fixed_aspect_ratio": SSDRandomCropFixedAspectRatio,
}
SUPPORTED = tuple(OPS)
DEFAULT_STEPS = (Step("random_horizontal_flip", (("probability", 0.5),)),)


# ---- the list ----------------------------------------------------------------------------------


def draw_step(step: Step, seed: tf.Tensor, image: tf.Tensor, boxes: tf.Tensor) -> Draws:
    return OPS[step.name].draw(step.kwargs, seed, image, boxes)


def apply_step(step: Step, draws: Draws, image, boxes, labels) -> Example:
    image, boxes, labels = OPS[step.name].apply(step.kwargs, draws, image, boxes, labels)
    return image, tf.reshape(boxes, [-1, 4]), labels


def augment(steps: Sequence[Step], seed: tf.Tensor, image, boxes, labels) -> Example:
    """Apply `steps` in order to an image (uint8 or float32, 0..255) and its boxes/labels. TF1
    casts to float32 first; here the cast waits for the first option that computes on pixel
    values (the same numbers: flips and crops commute with it). The model's resize casts too."""
    for position, step in enumerate(steps):
        if not OPS[step.name].moves_pixels_only:
            image = tf.cast(image, tf.float32)
        op_seed = step_seed(seed, position)
        draws = draw_step(step, op_seed, image, boxes)
        image, boxes, labels = apply_step(step, draws, image, boxes, labels)
    return image, boxes, labels


def steps_from_messages(messages: Sequence[Any], source: str, field: str) -> tuple[Step, ...]:
    """PreprocessingStep messages -> Steps; one-line PipelineError for any option fine-tuning does
    not implement (naming the file, the option and the override)."""
    steps = []
    for number, message in enumerate(messages, start=1):
        name = message.WhichOneof("preprocessing_step")
        if name is None:
            raise PipelineError(
                f"{source}: {field} #{number} is empty or an option this project does not know "
                f"(the OD API 2.8 options are known); implemented: {', '.join(SUPPORTED)}; "
                + OVERRIDE_HINT.format(name="NAME")
            )
        if name not in OPS:
            raise PipelineError(
                f"{source}: {field} #{number} {name} is not implemented for fine-tuning "
                f"(implemented: {', '.join(SUPPORTED)}); " + OVERRIDE_HINT.format(name=name)
            )
        try:
            args = OPS[name].arguments(getattr(message, name))
        except ValueError as error:
            raise PipelineError(
                f"{source}: {field} #{number} {name}: {error}; fix it or "
                + OVERRIDE_HINT.format(name=name)
            ) from error
        steps.append(Step(name, tuple(sorted(args.items()))))
    return tuple(steps)


def parse_option_texts(texts: Sequence[str], source: str) -> list[Any]:
    """PreprocessingStep messages from text-format strings, e.g. 'ssd_random_crop {}'."""
    from google.protobuf import text_format

    from pipeline.tf1.protos.pipeline_subset import message_class

    messages = []
    for text in texts:
        message = message_class("PreprocessingStep")()
        try:
            text_format.Parse(str(text), message, allow_unknown_field=True)
        except text_format.ParseError as error:
            raise PipelineError(
                f"{source}: train.augmentation.options entry {text!r} is not a text-format TF1 "
                f"PreprocessingStep ({error}); write e.g. 'random_adjust_brightness {{ max_delta: "
                "0.1 }'"
            ) from error
        messages.append(message)
    return messages


def resolve_steps(
    converted_dir: str | Path,
    from_pipeline_config: bool,
    options: Sequence[str],
    skip: Sequence[str],
    source: str = "params.yaml",
) -> tuple[Step, ...]:
    """The augmentation fine-tuning applies: the converted model's pipeline.config options (or
    train.augmentation.options), less train.augmentation.skip."""
    from pipeline.tf1.protos.pipeline_subset import message_class

    skip = set(skip)
    known = {field.name for field in message_class("PreprocessingStep").DESCRIPTOR.fields}
    unknown = sorted(skip - known)
    if unknown:
        raise PipelineError(
            f"{source}: train.augmentation.skip names {unknown}, not TF1 preprocessing options; "
            f"use option names such as {', '.join(SUPPORTED[:3])}"
        )
    if not from_pipeline_config:
        messages = [
            message
            for message in parse_option_texts(options, source)
            if message.WhichOneof("preprocessing_step") not in skip
        ]
        return steps_from_messages(messages, source, "train.augmentation.options")
    from pipeline.tf1.pipeline_config import read_pipeline_config

    path = Path(converted_dir) / "pipeline.config"
    if not path.is_file():
        raise PipelineError(
            f"{path}: not found (train.augmentation.from_pipeline_config is true); re-run "
            "`python -m pipeline convert`, or set train.augmentation.from_pipeline_config=false "
            "and list train.augmentation.options"
        )
    config = read_pipeline_config(path)
    messages = [
        message
        for message in config.train_config.data_augmentation_options
        if message.WhichOneof("preprocessing_step") not in skip
    ]
    return steps_from_messages(messages, str(path), CONFIG_FIELD)
