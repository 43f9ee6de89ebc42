"""TF1 SSD input preprocessing: legacy resize, then the feature extractor's normalisation
(MobileNet / Inception: x * 2/255 - 1; ResNet: slim's channel means subtracted).

TF1's `fixed_shape_resizer` calls `tf.image.resize_images(..., align_corners=False)`, i.e. the
`ResizeBilinear` kernel *without* half-pixel centers. TF2's `tf.image.resize` uses half-pixel
centers and samples different pixels, which shifts every activation; the raw op with both flags
off reproduces TF1. Model Garden's parser (ImageNet mean/std, aspect-preserving pad) is not used
for these models for the same reason.
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.modeling.spec import RESNET_FPN_DEPTHS, SSDSpec

# The ResNet v1 feature extractors' preprocessing (VGG channel means, subtracted from 0..255 RGB).
RESNET_CHANNEL_MEANS = (123.68, 116.779, 103.939)

_RESIZE_OPS = {
    "BILINEAR": tf.raw_ops.ResizeBilinear,
    "NEAREST_NEIGHBOR": tf.raw_ops.ResizeNearestNeighbor,
    "BICUBIC": tf.raw_ops.ResizeBicubic,
    "AREA": tf.raw_ops.ResizeArea,
}


def resize_tf1(
    images: tf.Tensor, size: tuple[int, int] | tf.Tensor, method: str = "BILINEAR"
) -> tf.Tensor:
    """TF1 resize_images(align_corners=False) of [N, H, W, C] images -> float32."""
    images = tf.cast(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"expected [N, H, W, C] images, got shape {images.shape}")
    op = _RESIZE_OPS[method]
    kwargs = {"align_corners": False}
    if method in ("BILINEAR", "NEAREST_NEIGHBOR", "BICUBIC"):
        kwargs["half_pixel_centers"] = False
    resized = op(images=images, size=tf.convert_to_tensor(size, tf.int32), **kwargs)
    return tf.cast(resized, tf.float32)


def subtract_channel_means(resized: tf.Tensor) -> tf.Tensor:
    """The ResNet v1 feature extractors' preprocess (SSD FPN and Faster R-CNN): RGB 0..255 minus
    slim's VGG channel means."""
    return resized - tf.constant([[RESNET_CHANNEL_MEANS]], tf.float32)


def preprocess(images_uint8: tf.Tensor, spec: SSDSpec) -> tf.Tensor:
    """uint8 (or float 0..255) [N, H, W, 3] -> the float32 [N, h, w, 3] the model takes."""
    resized = resize_tf1(images_uint8, spec.image_size, spec.resize_method)
    if spec.architecture in RESNET_FPN_DEPTHS:
        return subtract_channel_means(resized)
    # The MobileNet / Inception feature extractors' preprocess: (2.0 / 255.0) * x - 1.0.
    return (2.0 / 255.0) * resized - 1.0
