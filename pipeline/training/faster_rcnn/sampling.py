"""TF1's `BalancedPositiveNegativeSampler` (non-static) with stateless, seeded randomness.

TF1 (and Model Garden's port in `official/vision/ops/sampling_ops.py`) draw with
`tf.random.shuffle`, a stateful op: a resumed run would not redraw the same minibatches. Here each
draw is a uniform random subset chosen by ranking `tf.random.stateless_uniform` keys, the same
distribution as TF1's shuffle-then-take-first, as a pure function of the seed (the fine-tune task
derives it from (train.seed, step, image, stage)).
"""

from __future__ import annotations

import tensorflow as tf


def _random_subset(indicator: tf.Tensor, count: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniformly random subset of min(count, sum(indicator)) of the True entries of [N]."""
    keys = tf.random.stateless_uniform(tf.shape(indicator), seed=seed)
    keys = tf.where(indicator, keys, -1.0)  # unselectable entries rank last
    rank = tf.argsort(tf.argsort(keys, direction="DESCENDING", stable=True), stable=True)
    return tf.logical_and(indicator, rank < tf.cast(count, rank.dtype))


def balanced_sample(
    indicator: tf.Tensor,
    labels: tf.Tensor,
    batch_size: int,
    positive_fraction: float,
    seed: tf.Tensor,
) -> tf.Tensor:
    """[N] bool mask of the sampled entries, as TF1's `subsample(indicator, batch_size, labels)`.

    At most int(positive_fraction * batch_size) positives (labels & indicator), then negatives
    (~labels & indicator) up to batch_size in total.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    positives = tf.logical_and(labels, indicator)
    negatives = tf.logical_and(tf.logical_not(labels), indicator)
    sampled_positives = _random_subset(positives, int(positive_fraction * batch_size), seeds[0])
    num_positives = tf.reduce_sum(tf.cast(sampled_positives, tf.int32))
    sampled_negatives = _random_subset(negatives, batch_size - num_positives, seeds[1])
    return tf.logical_or(sampled_positives, sampled_negatives)
