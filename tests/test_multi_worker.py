"""Two workers train as one (issue 12): `python -m pipeline fine-tune` under Model Garden's
MultiWorkerMirroredStrategy, two worker processes on loopback set up from
`train.runtime.worker_hosts` / `task_index` as the README documents, against the same fine-tune in
one process with the same global batch. The losses per step must agree (float round-off from the
all-reduce aside), and so must the trained weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_training_support import train_params, write_converted, write_tfrecords

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _losses(out: Path) -> list[float]:
    rows = (out / "dvclive/plots/metrics/train/loss.tsv").read_text().split()
    return [float(value) for value in rows[3::2]]  # "step loss" header, then pairs


def _weights(out: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(out / "checkpoint"))
    names = [
        name
        for name in reader.get_variable_to_shape_map()
        if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
        and not name.startswith(("optimizer/", "global_step", "save_counter", "checkpointed_runs"))
    ]
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.slow
def test_two_workers_on_loopback_train_as_one(coco_tiny: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    converted = tmp_path / "converted"
    write_converted(converted)
    records = write_tfrecords(tmp_path / "train.tfrecord", coco_tiny, limit=16)
    hosts = ",".join(f"localhost:{port}" for port in _free_ports(2))
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("TF_CONFIG", None)

    def command(name: str, runtime: dict) -> tuple[list[str], Path]:
        params = tmp_path / f"{name}.yaml"
        train = train_params(
            steps=STEPS, batch_size=4, checkpoint_every_steps=STEPS, runtime=runtime
        )
        OmegaConf.save(OmegaConf.create({"train": train}), params)
        out = tmp_path / name
        args = [sys.executable, "-m", "pipeline", "fine-tune", "--params", str(params),
                "--converted", str(converted), "--train-tfrecords", str(records), "--out",
                str(out), "--no-export"]  # fmt: skip
        return args, out

    single_args, single_out = command("single", {"distribution_strategy": "one_device"})
    workers = [
        command(
            f"worker{index}",
            {
                "distribution_strategy": "multi_worker_mirrored",
                "worker_hosts": hosts,
                "task_index": index,
            },
        )
        for index in range(2)
    ]
    processes = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args, _ in workers
    ]
    try:
        outputs = [process.communicate(timeout=900) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    single = subprocess.run(single_args, env=env, capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]

    chief = workers[0][1]
    assert '"num_replicas": 2' in (chief / "train_summary.json").read_text()
    one, two = _losses(single_out), _losses(chief)
    assert len(one) == STEPS
    np.testing.assert_allclose(two, one, rtol=2e-5)
    trained, reference = _weights(chief), _weights(single_out)
    assert trained.keys() == reference.keys() and trained
    for name, value in reference.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
