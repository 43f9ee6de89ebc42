"""TF1 data augmentation (`pipeline.training.augmentation`) against the TF1 OD API's preprocessor.

- Same draws: every option runs here on a small image with the project's stateless draws; the TF1
  OD API's own `preprocessor.preprocess` (the builder's function and arguments, in the reference
  venv: tf1_scripts/augment.py) runs the same option given those draws through its
  `preprocess_vars_cache`. Images, boxes and labels must be bit-identical.
- Distribution: where the draw itself is TF's (sample_distorted_bounding_box, stateful in TF1,
  stateless here) TF1's own draws and the project's are compared by their statistics; plain uniform
  draws by their ranges and means.
- The fine-tune input pipeline applies a real pipeline.config's list with (seed, example index)
  seeds, deterministically; options it does not implement stop it in one line.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.training import augmentation as aug

SCRIPTS = Path(__file__).parent / "tf1_scripts"
SAMPLE_CONFIG = "od_api/sample_configs/ssd_mobilenet_v2_coco.config"

OPTIONS = [
    "random_horizontal_flip {}",
    "ssd_random_crop {}",
    "ssd_random_crop { operations { min_object_covered: 0.3 min_aspect_ratio: 0.5 "
    "max_aspect_ratio: 2.0 min_area: 0.1 max_area: 1.0 overlap_thresh: 0.3 random_coef: 0.25 } "
    "operations { min_object_covered: 0.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 "
    "min_area: 0.1 max_area: 0.5 overlap_thresh: 0.6 clip_boxes: false random_coef: 0.0 } }",
    "random_adjust_brightness {}",
    "random_adjust_contrast { min_delta: 0.5 max_delta: 1.5 }",
    "random_adjust_hue {}",
    "random_adjust_saturation {}",
    "random_distort_color {}",
    "random_distort_color { color_ordering: 1 }",
    "random_rgb_to_gray { probability: 0.5 }",
    "random_black_patches { max_black_patches: 4 probability: 0.6 size_to_image_ratio: 0.25 }",
    "random_pad_image {}",
    "random_pad_image { min_image_height: 30 min_image_width: 40 max_image_height: 40 "
    "max_image_width: 50 pad_color: [10, 20, 30] }",
    "random_image_scale {}",
    "random_crop_image {}",
    "random_crop_image { min_object_covered: 0.5 overlap_thresh: 0.5 random_coef: 0.3 }",
    "random_vertical_flip {}",
    "random_rotation90 { probability: 0.7 }",
    "random_pixel_value_scale { minval: 0.5 maxval: 1.5 }",
    "random_jitter_boxes { ratio: 0.2 }",
    "random_jitter_boxes { ratio: 0.3 jitter_mode: SHRINK }",
    "random_jitter_boxes { ratio: 0.3 jitter_mode: EXPAND_SYMMETRIC }",
    "random_jitter_boxes { ratio: 0.3 jitter_mode: SHRINK_SYMMETRIC_XY }",
    "random_crop_pad_image {}",
    "random_crop_pad_image { min_object_covered: 0.3 random_coef: 0.3 min_padded_size_ratio: "
    "[1.2, 1.1] max_padded_size_ratio: [1.6, 2.5] pad_color: [10, 20, 30] }",
    "ssd_random_crop_pad {}",
    "ssd_random_crop_pad { operations { min_object_covered: 0.3 min_aspect_ratio: 0.5 "
    "max_aspect_ratio: 2.0 min_area: 0.1 max_area: 1.0 overlap_thresh: 0.3 random_coef: 0.25 "
    "min_padded_size_ratio: [1.0, 1.0] max_padded_size_ratio: [2.0, 2.0] pad_color_r: 50 } "
    "operations { min_object_covered: 0.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 "
    "min_area: 0.2 max_area: 0.6 overlap_thresh: 0.5 random_coef: 0.0 clip_boxes: false "
    "min_padded_size_ratio: [1.1, 1.1] max_padded_size_ratio: [1.5, 1.5] } }",
    "random_crop_to_aspect_ratio {}",
    "random_crop_to_aspect_ratio { aspect_ratio: 0.6 overlap_thresh: 0.6 }",
    "ssd_random_crop_fixed_aspect_ratio {}",
    "ssd_random_crop_fixed_aspect_ratio { aspect_ratio: 1.5 operations { min_object_covered: "
    "0.3 min_area: 0.2 max_area: 0.9 overlap_thresh: 0.3 random_coef: 0.2 } operations { "
    "min_object_covered: 0.8 min_area: 0.5 max_area: 1.0 overlap_thresh: 0.7 } }",
]
CHAIN = [
    "random_distort_color {}",
    "random_pad_image {}",
    "ssd_random_crop {}",
    "random_horizontal_flip {}",
    "random_image_scale { min_scale_ratio: 0.8 max_scale_ratio: 1.2 }",
    "random_black_patches { max_black_patches: 2 probability: 1.0 }",
]
SEEDS = range(5)

# TF2 draw names -> the TF1 PreprocessorCache (function id, key) each replaces.
_COLOR = {
    "delta_brightness": "adjust_brightness",
    "contrast_factor": "adjust_contrast",
    "delta_hue": "adjust_hue",
    "saturation_factor": "adjust_saturation",
}
_TF1_CACHE = {
    "random_horizontal_flip": [("horizontal_flip", "", ["flip"])],
    "random_rgb_to_gray": [("rgb_to_gray", "", ["gray"])],
    "random_image_scale": [("image_scale", "", ["size_coef"])],
    "random_pad_image": [
        ("pad_image", "", ["target_height", "target_width", "offset_height", "offset_width"])
    ],
    "random_crop_image": [
        ("crop_image", "", ["crop_coef"]),
        ("strict_crop_image", "*", ["crop_begin", "crop_size", "crop_window"]),
    ],
}
_TF1_CACHE["ssd_random_crop"] = [
    ("selector_tuples", "ssd_crop_selector_id", ["case"]),
    *_TF1_CACHE["random_crop_image"],
]
_TF1_CACHE["random_vertical_flip"] = [("vertical_flip", "", ["flip"])]
_TF1_CACHE["random_rotation90"] = [("rotation90", "", ["flip"])]
_TF1_CACHE["random_pixel_value_scale"] = [("pixel_value_scale", "", ["color_coef"])]
_TF1_CACHE["random_jitter_boxes"] = []  # drawn outside the cache: the `uniform` patch
_TF1_CACHE["random_crop_pad_image"] = [
    *_TF1_CACHE["random_crop_image"],
    *_TF1_CACHE["random_pad_image"],
]
_TF1_CACHE["ssd_random_crop_pad"] = [
    ("selector_tuples", "ssd_crop_pad_selector_id", ["case"]),
    *_TF1_CACHE["random_crop_pad_image"],
]
_TF1_CACHE["random_crop_to_aspect_ratio"] = [
    ("crop_to_aspect_ratio", "", ["aspect_offset_height", "aspect_offset_width"])
]
_TF1_CACHE["ssd_random_crop_fixed_aspect_ratio"] = [
    *_TF1_CACHE["ssd_random_crop"],
    *_TF1_CACHE["random_crop_to_aspect_ratio"],
]


def tf1_cache_entries(name: str, draws: dict) -> list[tuple[str, str, list[str]]]:
    if name in _TF1_CACHE:
        return _TF1_CACHE[name]
    if name == "random_black_patches":
        count = sum(1 for key in draws if key.startswith("patch") and "_" not in key)
        entries = []
        for idx in range(count):
            entries.append(("black_patches", str(idx), [f"patch{idx}"]))
            entries.append(("add_black_patch", f"{idx}y", [f"patch{idx}_y"]))
            entries.append(("add_black_patch", f"{idx}x", [f"patch{idx}_x"]))
        return entries
    return [(_COLOR[key], "", [key]) for key in draws]  # color ops


def example():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, [24, 32, 3]).astype(np.float32)
    boxes = np.array(
        [[0.1, 0.1, 0.5, 0.6], [0.4, 0.5, 0.9, 0.95], [0.0, 0.0, 0.2, 0.15], [0.6, 0.05, 1.0, 0.3]],
        np.float32,
    )
    labels = np.array([1, 2, 3, 1], np.int32)
    return image, boxes, labels


def steps_of(texts):
    return aug.steps_from_messages(aug.parse_option_texts(texts, "test"), "test", "options")


def run_tf2(texts, seed, image, boxes, labels):
    """The project's chain, keeping each step's draws (as `augment` computes them)."""
    steps = steps_of(texts)
    image, boxes, labels = tf.constant(image), tf.constant(boxes), tf.constant(labels)
    arrays, cache, spec = {}, [], {}
    for position, step in enumerate(steps):
        draws = aug.draw_step(step, aug.step_seed([0, seed], position), image, boxes)
        for function_id, key, names in tf1_cache_entries(step.name, draws):
            cache.append([function_id, key, [f"d{position}_{n}" for n in names]])
        if "jitter" in draws:
            spec["uniform"] = f"d{position}_jitter"
        arrays.update({f"d{position}_{k}": v.numpy() for k, v in draws.items()})
        image, boxes, labels = aug.apply_step(step, draws, image, boxes, labels)
    again = aug.augment(steps, tf.constant([0, seed], tf.int64), *map(tf.constant, example()))
    np.testing.assert_array_equal(again[0].numpy(), image.numpy())  # augment == draw + apply
    return (image.numpy(), boxes.numpy(), labels.numpy()), arrays, {"cache": cache, **spec}


def run_tf1(python: Path, reference: Path, jobs: list[tuple[Path, Path]]) -> None:
    command = [str(python), str(SCRIPTS / "augment.py"), str(reference)]
    for source, target in jobs:
        command += [str(source), str(target)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def same_draws(tf1_reference_python, tf1_reference_dir, tmp_path_factory):
    """{(case name, seed): (tf2 outputs, tf1 outputs)} for every OPTIONS entry and the CHAIN."""
    work = tmp_path_factory.mktemp("augment")
    image, boxes, labels = example()
    cases = {**{text: [text] for text in OPTIONS}, "chain": CHAIN}
    jobs, tf2 = [], {}
    for number, (name, texts) in enumerate(cases.items()):
        for seed in SEEDS:
            outputs, arrays, spec = run_tf2(texts, seed, image, boxes, labels)
            spec = json.dumps({"steps": texts, **spec})
            source, target = work / f"in{number}_{seed}.npz", work / f"out{number}_{seed}.npz"
            np.savez(source, image=image, boxes=boxes, labels=labels, spec=spec, **arrays)
            jobs.append((source, target))
            tf2[(name, seed)] = (outputs, target)
    run_tf1(tf1_reference_python, tf1_reference_dir, jobs)
    results = {}
    for key, (outputs, target) in tf2.items():
        with np.load(target) as tf1:
            results[key] = (outputs, (tf1["image"], tf1["boxes"], tf1["labels"]))
    return results


@pytest.mark.parametrize(
    "name",
    [*OPTIONS, "chain"],
    ids=[f"{i}-{text.split()[0]}" for i, text in enumerate(OPTIONS)] + ["chain"],
)
def test_option_equals_tf1_preprocessor_given_the_same_draws(same_draws, name):
    image0, boxes0, _ = example()
    changed = 0
    for seed in SEEDS:
        (image, boxes, labels), (tf1_image, tf1_boxes, tf1_labels) = same_draws[(name, seed)]
        assert image.shape == tf1_image.shape, seed
        np.testing.assert_array_equal(image, tf1_image, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(boxes, tf1_boxes, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(labels, tf1_labels)
        changed += image.shape != image0.shape or not np.array_equal(image, image0)
        changed += boxes.shape != boxes0.shape or not np.array_equal(boxes, boxes0)
    assert changed > 0, "no seed changed the example: the comparison proves nothing"


def test_crop_windows_follow_tf1s_distribution(tf1_reference_python, tf1_reference_dir, tmp_path):
    """TF1 draws its own crop windows (stateful sample_distorted_bounding_box); the project draws
    stateless ones from (seed, index): the same distribution of crop size and boxes kept."""
    image, boxes, labels = example()
    runs = 400
    texts_list = [
        ["ssd_random_crop {}"],
        ["random_crop_image { min_object_covered: 0.5 overlap_thresh: 0.5 random_coef: 0.3 }"],
    ]
    jobs = []
    for number, texts in enumerate(texts_list):
        source, target = tmp_path / f"in{number}.npz", tmp_path / f"out{number}.npz"
        spec = json.dumps({"steps": texts, "repeat": runs})
        np.savez(source, image=image, boxes=boxes, labels=labels, spec=spec)
        jobs.append((source, target))
    run_tf1(tf1_reference_python, tf1_reference_dir, jobs)
    for (_, target), texts in zip(jobs, texts_list, strict=True):
        steps = steps_of(texts)
        ours = {"area": [], "num_boxes": []}
        for index in range(runs):
            out = aug.augment(steps, tf.constant([3, index], tf.int64), image, boxes, labels)
            ours["area"].append(out[0].shape[0] * out[0].shape[1] / (24 * 32))
            ours["num_boxes"].append(int(out[1].shape[0]))
        with np.load(target) as tf1:
            theirs = {
                "area": tf1["height"] * tf1["width"] / (24 * 32),
                "num_boxes": tf1["num_boxes"],
            }
        for key in ours:
            a, b = np.asarray(ours[key], float), np.asarray(theirs[key], float)
            stderr = np.sqrt(a.var() / runs + b.var() / runs)
            assert abs(a.mean() - b.mean()) < 4 * stderr + 1e-9, (texts, key, a.mean(), b.mean())


def test_uniform_draws_have_tf1s_ranges_and_means():
    image, boxes, _ = (tf.constant(x) for x in example())
    n = 300

    def draws(text):
        (step,) = steps_of([text])
        return [aug.draw_step(step, aug.step_seed([1, i], 0), image, boxes) for i in range(n)]

    flips = np.array([d["flip"].numpy() < 0.5 for d in draws("random_horizontal_flip {}")])
    assert 0.4 < flips.mean() < 0.6
    delta = np.array([d["delta_brightness"] for d in draws("random_adjust_brightness {}")])
    assert delta.min() >= -0.2 and delta.max() <= 0.2 and abs(delta.mean()) < 0.03
    factor = np.array([d["contrast_factor"] for d in draws("random_adjust_contrast {}")])
    assert factor.min() >= 0.8 and factor.max() <= 1.25
    assert abs(factor.mean() - 1.025) < 0.03
    cases = np.array([int(d["case"]) for d in draws("ssd_random_crop {}")])
    assert set(cases) == set(range(7)) and np.bincount(cases).min() > n / 7 / 2
    pads = draws("random_pad_image {}")
    heights = np.array([int(d["target_height"]) for d in pads])
    offsets = np.array([int(d["offset_height"]) for d in pads])
    assert heights.min() >= 24 and heights.max() < 48 and (offsets <= heights - 24).all()
    jitter = np.stack([d["jitter"] for d in draws("random_jitter_boxes { ratio: 0.3 }")])
    assert jitter.shape == (n, 4, 4) and jitter.min() >= -0.3 and jitter.max() <= 0.3
    assert abs(jitter.mean()) < 0.02
    shrink = np.stack(
        [d["jitter"] for d in draws("random_jitter_boxes { jitter_mode: SHRINK_SYMMETRIC }")]
    )
    assert shrink.shape == (n, 4, 2) and shrink.min() >= -0.05 and shrink.max() <= 0.0
    # Successive options of one list draw from independent seeds.
    first = aug.step_seed(tf.constant([1, 0], tf.int64), 0)
    assert len({tuple(aug.step_seed(first, k).numpy()) for k in range(4)}) == 4


# ---- pipeline.config, overrides and the fine-tune input pipeline ------------------------------


def write_config(directory: Path, options: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(f"  data_augmentation_options {{ {o} }}\n" for o in options)
    (directory / "pipeline.config").write_text(f"train_config {{\n{body}}}\n")
    return directory


def test_sample_config_list_is_read(shared_fixtures):
    from pipeline.tf1.pipeline_config import read_pipeline_config

    path = shared_fixtures / SAMPLE_CONFIG
    config = read_pipeline_config(path)
    steps = aug.steps_from_messages(
        config.train_config.data_augmentation_options, str(path), aug.CONFIG_FIELD
    )
    assert [s.name for s in steps] == ["random_horizontal_flip", "ssd_random_crop"]
    assert steps[1].kwargs["cases"] == aug.SSD_DEFAULT_CASES


def test_unimplemented_option_is_one_line_naming_file_option_and_fix(tmp_path):
    converted = write_config(
        tmp_path / "conv", ["random_horizontal_flip {}", "random_jpeg_quality { random_coef: 0.5 }"]
    )
    with pytest.raises(PipelineError) as error:
        aug.resolve_steps(converted, True, [], [])
    message = str(error.value)
    assert "\n" not in message
    assert str(converted / "pipeline.config") in message and "random_jpeg_quality" in message
    assert "train.augmentation.skip" in message
    steps = aug.resolve_steps(converted, True, [], ["random_jpeg_quality"])
    assert [s.name for s in steps] == ["random_horizontal_flip"]
    # An option the OD API 2.8 does not know either.
    write_config(converted, ["random_frobnicate { x: 1 }"])
    with pytest.raises(PipelineError, match="#1 is empty or an option this project does not know"):
        aug.resolve_steps(converted, True, [], [])
    # The explicit list replaces the config's.
    steps = aug.resolve_steps(converted, False, ["random_adjust_hue { max_delta: 0.1 }"], [])
    assert steps == (aug.Step("random_adjust_hue", (("max_delta", pytest.approx(0.1)),)),)
    with pytest.raises(PipelineError, match="not a text-format TF1 PreprocessingStep"):
        aug.resolve_steps(converted, False, ["random_adjust_hue { max_delta: }"], [])


def test_finetune_stops_before_any_work_on_an_unimplemented_option(tmp_path):
    from test_training_support import train_params

    from pipeline.training.finetune import finetune

    converted = write_config(
        tmp_path / "conv", ["random_horizontal_flip {}", "autoaugment_image {}"]
    )
    with pytest.raises(PipelineError, match="autoaugment_image is not implemented") as error:
        finetune(train_params(), converted, str(tmp_path / "none*.tfrecord"), tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(PipelineError, match=r"train\.augmentation has keys"):
        finetune(
            train_params(**{"augmentation.random_horizontal_flip": True}),
            converted,
            "x",
            tmp_path / "out",
        )


def test_input_pipeline_applies_the_config_list_per_example_index(
    tmp_path, coco_tiny, shared_fixtures
):
    """The training stream = decode -> the sample config's list (flip, ssd_random_crop) with seed
    (seed, example index) -> the model's resize; deterministic, and not the unaugmented stream."""
    from official.vision.dataloaders import tf_example_decoder
    from test_training_support import small_spec, write_tfrecords

    from pipeline.modeling import anchors as anchors_lib
    from pipeline.modeling.preprocessing import preprocess
    from pipeline.training.inputs import InputSettings, build_dataset
    from pipeline.training.targets import MatcherSettings, TF1TargetAssigner

    text = (shared_fixtures / SAMPLE_CONFIG).read_text()
    converted = tmp_path / "conv"
    converted.mkdir()
    (converted / "pipeline.config").write_text(text)
    steps = aug.resolve_steps(converted, True, [], [])
    spec = small_spec()
    records = write_tfrecords(tmp_path / "t.tfrecord", coco_tiny, limit=4)
    assigner = TF1TargetAssigner(anchors_lib.tf1_anchor_boxes(spec), MatcherSettings())

    def stream(augmentation, count=8):
        settings = InputSettings(
            str(records), batch_size=1, shuffle_buffer_size=1, seed=5, augmentation=augmentation
        )
        ds = build_dataset(settings, lambda images: preprocess(images, spec), assigner, 3)
        return list(ds.take(count).as_numpy_iterator())

    augmented, again, plain = stream(steps), stream(steps), stream(())
    decoder = tf_example_decoder.TfExampleDecoder()
    serialized = list(tf.data.TFRecordDataset(str(records)))
    differs = 0
    for index, ((image, labels), (image2, _), (plain_image, _)) in enumerate(
        zip(augmented, again, plain, strict=True)
    ):
        np.testing.assert_array_equal(image, image2)
        decoded = decoder.decode(serialized[index % len(serialized)])
        out_image, out_boxes, out_classes = aug.augment(
            steps,
            tf.constant([5, index], tf.int64),
            decoded["image"],
            tf.cast(decoded["groundtruth_boxes"], tf.float32),
            tf.cast(decoded["groundtruth_classes"], tf.int32),
        )
        np.testing.assert_array_equal(image[0], preprocess(out_image[None], spec)[0].numpy())
        expected = assigner(out_boxes, out_classes)
        np.testing.assert_array_equal(labels["cls_targets"][0], expected["cls_targets"].numpy())
        differs += not np.array_equal(image, plain_image)
    assert differs >= len(augmented) // 2


def test_uint8_input_gives_tf1s_float_result():
    """Flips and crops run on the decoded uint8 image until an option computes on pixel values;
    the result equals TF1's cast-first order."""
    image, boxes, labels = example()
    steps = steps_of(["random_horizontal_flip {}", "ssd_random_crop {}", *CHAIN])
    for index in range(4):
        seed = tf.constant([2, index], tf.int64)
        on_uint8 = aug.augment(steps, seed, image.astype(np.uint8), boxes, labels)
        on_float = aug.augment(steps, seed, image, boxes, labels)
        assert on_uint8[0].dtype == tf.float32
        for a, b in zip(on_uint8, on_float, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    flip_crop = aug.augment(steps[:2], seed, image.astype(np.uint8), boxes, labels)[0]
    assert flip_crop.dtype == tf.uint8
