"""Read a TF1 name-based checkpoint (`model.ckpt.index` + `model.ckpt.data-*`).

TensorFlow's `CheckpointReader` (`tf.train.load_checkpoint`) reads TF1 checkpoints directly; this
module adds what the converter needs around it: finding the prefix in a model directory (the newest
checkpoint, `pipeline.tf1.model_dir`), the variable layout from the index alone (no data file
needed, which is all the test fixtures have), and a clear error when the data file is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.tf1.model_dir import DEFAULT_PREFIX, find_checkpoint

# Variables a TF1 training checkpoint may hold besides the model's weights: step counters
# (in quantized graphs also the fake-quant step, which fine-tuning restarts from 0 as TF1 restarts
# a fresh global_step), optimizer slots and moving-average shadows. (The zero-debias state of the
# activation ranges, `.../act_quant/min/biased`, is a model variable: quantization-aware
# fine-tuning continues those averages.)
_BOOKKEEPING = re.compile(
    r"(^(global_step|fake_quantization_step)$|/(ExponentialMovingAverage|RMSProp(_\d+)?|"
    r"Momentum|Adam(_\d+)?|Adagrad|Ftrl(_\d+)?)$|^beta[12]_power(_\d+)?$)"
)


def is_bookkeeping(name: str) -> bool:
    """True for step counters, optimizer slots and EMA shadows (not model weights)."""
    return bool(_BOOKKEEPING.search(name))


def checkpoint_prefix(path: str | os.PathLike[str]) -> Path:
    """A model directory (its newest checkpoint), a checkpoint prefix or a `.index` file -> the
    checkpoint prefix."""
    path = Path(path)
    if path.is_dir():
        found, _ = find_checkpoint(path)
        path = found if found is not None else path / DEFAULT_PREFIX
    elif path.suffix == ".index":
        path = path.with_suffix("")
    if not Path(f"{path}.index").is_file():
        raise PipelineError(
            f"{path}.index: TF1 checkpoint index not found; pass the TF1 model directory "
            "(with model.ckpt[-N].index and .data-*) or a checkpoint prefix"
        )
    return path


class TF1Checkpoint:
    """Names, shapes and values of a TF1 checkpoint."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tensorflow as tf

        self.prefix = checkpoint_prefix(path)
        try:
            self._reader = tf.train.load_checkpoint(str(self.prefix))
        except Exception as error:
            raise PipelineError(
                f"{self.prefix}.index: cannot be read as a TF1 checkpoint ({error}); "
                "re-extract the zoo model"
            ) from error
        shapes = self._reader.get_variable_to_shape_map()
        dtypes = self._reader.get_variable_to_dtype_map()
        self.shapes: dict[str, tuple[int, ...]] = {
            name: tuple(int(d) for d in shape) for name, shape in shapes.items()
        }
        self.dtypes = {name: dtypes[name].as_numpy_dtype for name in shapes}

    @property
    def location(self) -> str:
        """The file errors name (as `pipeline.tf1.weights.WeightSource.location`)."""
        return f"{self.prefix}.index"

    @property
    def names(self) -> list[str]:
        return sorted(self.shapes)

    def data_files(self) -> list[Path]:
        return sorted(self.prefix.parent.glob(f"{self.prefix.name}.data-*"))

    def require_data(self) -> None:
        if not self.data_files():
            raise PipelineError(
                f"{self.prefix}.data-00000-of-00001: checkpoint data file not found (only the "
                "index is present); extract the complete zoo tarball"
            )

    def read(self, name: str) -> np.ndarray:
        try:
            return self._reader.get_tensor(name)
        except Exception as error:
            self.require_data()
            raise PipelineError(
                f"{self.prefix}: variable {name} cannot be read ({error}); the data file is "
                "incomplete or corrupt, re-extract the zoo model"
            ) from error
