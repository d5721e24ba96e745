"""Training on several processes (torchrun, DistributedDataParallel over gloo on loopback).

The promise tested here: a run's result does not depend on the number of processes. Two
processes with the same global batch and seed end with the weights one process ends with (fp32,
max absolute difference <= 1e-3), for a model trained from scratch with dropout and for one trained
as a transfer model on cached activations; a killed process ends the job quickly with a message,
and the run continues with --resume to the same weights.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_image_folder
from image_classifier.runs import CARD_NAME, RESUME_NAME
from image_classifier.training.distributed import Dist, all_gather_rows, shard
from image_classifier.training.dropout import SampleDropout, per_sample_dropout
from image_classifier.training.loop import Trainer
from image_classifier.training.seeding import sample_uniforms

CHILD = Path(__file__).resolve().parent / "ddp_child.py"
ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
BOUND_S = 120  # the longest a run of these tests may take before it is called hung
MOBILENET_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"


def _env(dist_timeout_s: float = 60) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "IMAGE_CLASSIFIER_DIST_TIMEOUT": str(dist_timeout_s)}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _child(data: Path, out: Path, arch: str, *extra: str, nproc: int = 1, timeout: float = 300,
           dist_timeout_s: float = 60) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, str(CHILD), str(data), str(out), arch, *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(CHILD), str(data), str(out), arch, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(dist_timeout_s))


def _athletes_sample(athletes: Path, into: Path, per_class: int) -> Path:
    """The first ``per_class`` photos of each athlete, linked into a folder of their own."""
    for cls in sorted(p for p in athletes.iterdir() if p.is_dir()):
        (into / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            (into / cls.name / f.name).symlink_to(f)
    return into


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    card = json.loads((model_dir / CARD_NAME).read_text())
    return load_file(str(model_dir / card["weights_file"]))


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # 42 images: 8 does not divide the 29-image training split, so the last batch is a partial one
    # and the sampler's padding (weighted 0) is exercised.
    return make_image_folder(tmp_path_factory.mktemp("ddp") / "data", classes={"a": 14, "b": 14, "c": 14},
                             size=(40, 40))


# -- the pieces, in one process ----------------------------------------------------------------------

def test_the_processes_steps_together_cover_one_processs_batches():
    n, batch = 29, 8

    class Stub:  # what Trainer._order reads
        seed = 5

    one = Stub()
    one.dist = Dist()
    order, real = Trainer._order(one, n, epoch=3)
    assert real.all() and sorted(order.tolist()) == list(range(n))
    shares = []
    for rank in range(2):
        p = Stub()
        p.dist = Dist(world_size=2, rank=rank, backend="gloo")
        shares.append(Trainer._order(p, n, epoch=3))
    per = batch // 2
    steps = range(0, len(shares[0][0]), per)
    for s, start in enumerate(steps):
        together = [int(i) for o, r in shares for i, ok in zip(o[start:start + per], r[start:start + per]) if ok]
        assert sorted(together) == sorted(order[s * batch:(s + 1) * batch].tolist())
    assert sum(int(r.sum()) for _, r in shares) == n  # padding repeats are marked not real
    other_epoch, _ = Trainer._order(one, n, epoch=4)
    assert not torch.equal(order, other_epoch)


def test_dropout_masks_depend_on_the_sample_not_on_its_batch():
    net = torch.nn.Sequential(torch.nn.Linear(6, 50), torch.nn.Dropout(0.5), torch.nn.Linear(50, 2)).train()
    x = torch.randn(8, 6)
    with per_sample_dropout(net) as drops:
        assert len(drops) == 1 and isinstance(net[1], SampleDropout)
        drops[0].keys = (1, 0, torch.arange(8))
        whole = net(x)
        part = torch.tensor([6, 2, 3])
        drops[0].keys = (1, 0, part)
        torch.testing.assert_close(net(x[part]), whole[part])
        drops[0].keys = (1, 1, torch.arange(8))  # another epoch: other masks
        assert not torch.allclose(net(x), whole)
        hidden = net[1](torch.ones(8, 50))
        assert 0.3 < float((hidden == 0).float().mean()) < 0.7  # p = 0.5 of the units dropped
        net.eval()
        torch.testing.assert_close(net[1](torch.ones(2, 50)), torch.ones(2, 50))  # identity in eval mode
    assert type(net[1]) is torch.nn.Dropout  # the network is given back as it was


def test_sample_uniforms_are_uniform_and_keyed_by_index():
    u = sample_uniforms(0, torch.arange(4000), 16, "t")
    assert u.shape == (4000, 16) and 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.std()) - (1 / 12) ** 0.5) < 0.01
    torch.testing.assert_close(sample_uniforms(0, torch.tensor([17, 3]), 16, "t"), u[[17, 3]])
    assert not torch.equal(sample_uniforms(1, torch.arange(4), 16, "t"), u[:4])


def test_shards_cover_the_rows_once():
    for n in (0, 1, 5, 29):
        rows = [list(shard(n, Dist(world_size=3, rank=r))) for r in range(3)]
        assert sum(rows, []) == list(range(n))
    assert torch.equal(all_gather_rows(Dist(), torch.arange(5), 5, torch.device("cpu")), torch.arange(5))


# -- real processes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["ddp_scratch", "ddp_transfer"])
def test_two_processes_give_the_weights_of_one(folder, tmp_path, arch):
    one = _child(folder, tmp_path / "one", arch)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _child(folder, tmp_path / "two", arch, nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    diff = _max_difference(tmp_path / "one", tmp_path / "two")
    assert diff <= 1e-3, f"max |w1 - w2| = {diff}"
    card_one = json.loads((tmp_path / "one" / CARD_NAME).read_text())
    card_two = json.loads((tmp_path / "two" / CARD_NAME).read_text())
    assert card_one["distributed"] is None and card_two["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert card_two["device"]["device"] == "cpu" and card_two["precision"] == "fp32"
    assert [h["epoch"] for h in card_two["history"]] == [h["epoch"] for h in card_one["history"]]
    for h1, h2 in zip(card_one["history"], card_two["history"]):
        assert h2["val_loss"] == pytest.approx(h1["val_loss"], abs=1e-4)
        assert h2["train_accuracy"] == pytest.approx(h1["train_accuracy"], abs=1e-9)
    # One process wrote: one line of output, one model.
    assert two.stdout.count("trained ") == 1


def test_the_several_machines_command_on_loopback(folder, tmp_path):
    """The README's multi-node form: one torchrun agent per machine meeting at a c10d rendezvous
    (here two agents on this machine, one process each, on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(TORCHRUN), "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=test", str(CHILD), str(folder), str(tmp_path / "two"),
           "ddp_scratch"]
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
              for _ in range(2)]
    outputs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    card = json.loads((tmp_path / "two" / CARD_NAME).read_text())
    assert card["distributed"] == {"world_size": 2, "backend": "gloo"}
    one = _child(folder, tmp_path / "one", "ddp_scratch")
    assert one.returncode == 0, one.stderr[-3000:]
    assert _max_difference(tmp_path / "one", tmp_path / "two") <= 1e-3


def test_a_killed_process_ends_the_job_and_resume_finishes_it(folder, tmp_path):
    out = tmp_path / "run"
    # The survivor's collectives would wait an hour for the dead process: the job can only end
    # (before the test's own timeout) because the death is noticed.
    killed = _child(folder, out, "ddp_scratch", "--epochs", "3", "--die-after-epoch", "2", nproc=2,
                    timeout=BOUND_S + 60, dist_timeout_s=3600)
    assert killed.returncode != 0
    assert "trained " not in killed.stdout  # rank 0 did not go on to finish alone
    text = killed.stdout + killed.stderr
    assert "rank      : 1" in text and "SIGKILL" in text, text[-3000:]
    assert (out / RESUME_NAME).is_file()  # rank 0 had checkpointed the epochs before
    resumed = _child(folder, out, "ddp_scratch", "--epochs", "3", "--resume", nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / RESUME_NAME).exists()
    whole = _child(folder, tmp_path / "whole", "ddp_scratch", "--epochs", "3")
    assert whole.returncode == 0, whole.stderr[-3000:]
    diff = _max_difference(out, tmp_path / "whole")
    assert diff <= 1e-3, f"killed + resumed on 2 processes vs uninterrupted on 1: max |dw| = {diff}"


def test_a_batch_the_processes_cannot_share_is_an_error(folder, tmp_path):
    run = _child(folder, tmp_path / "odd", "ddp_scratch", "--batch", "7", nproc=2, timeout=BOUND_S)
    assert run.returncode != 0
    assert "cannot be shared by 2 processes" in run.stderr and "multiple of 2" in run.stderr


@pytest.mark.slow
def test_torchrun_runs_the_package_as_the_readme_writes_it(tmp_path, athletes_dir):
    """``torchrun --standalone --nproc_per_node=2 -m image_classifier train DATA ...`` with a real
    transfer architecture and its ImageNet weights, on a small sample of real photos."""
    data = _athletes_sample(athletes_dir, tmp_path / "data", 12)
    out = tmp_path / "mnv2"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "image_classifier", "train", str(data),
           "--arch", "mobilenet_v2", "--weights", str(MOBILENET_WEIGHTS), "--epochs", "1", "--set", "feature_views=1",
           "--batch-size", "8", "--out", str(out), "--device", "cpu", "--no-progress", "--no-cache"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    card = json.loads((out / CARD_NAME).read_text())
    assert card["distributed"] == {"world_size": 2, "backend": "gloo"} and card["status"] == "complete"
    assert "calibration" in card  # rank 0 went on to fit the temperature, as `train` does
    assert run.stdout.count("mobilenet_v2: best epoch") == 1
    predicted = subprocess.run([sys.executable, "-m", "image_classifier", "predict", str(out),
                                str(next(next(data.iterdir()).iterdir()))],
                               capture_output=True, text=True, timeout=300, env=_env())
    assert predicted.returncode == 0, predicted.stderr[-2000:]


def test_device_cuda_without_a_gpu_is_a_clear_error_and_auto_is_the_cpu(folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    run = subprocess.run([sys.executable, "-m", "image_classifier", "train", str(folder), "--arch", "simple_cnn",
                          "--device", "cuda", "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert run.returncode == 2
    assert "--device cuda: no CUDA GPU is available" in run.stderr and "--device cpu" in run.stderr
    assert not (tmp_path / "m").exists()  # refused before anything was read or written
    one = _child(folder, tmp_path / "auto", "ddp_scratch", "--epochs", "1", "--device", "auto")
    assert one.returncode == 0
    assert json.loads((tmp_path / "auto" / CARD_NAME).read_text())["device"]["device"] == "cpu"


@pytest.mark.slow
def test_compare_nproc_trains_each_model_through_torchrun(tmp_path, athletes_dir):
    data = _athletes_sample(athletes_dir, tmp_path / "data", 14)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "image_classifier", "compare", str(data), "--models", "mobilenet_v2",
           "--weights", f"mobilenet_v2={MOBILENET_WEIGHTS}", "--nproc", "2", "--device", "cpu", "--out", str(out),
           "--set", "phases.0.epochs=1", "--set", "phases.1.epochs=1", "--set", "feature_views=1",
           "--set", "batch_size=8", "--no-export", "--no-faces", "--no-audit", "--no-ensemble", "--no-cache",
           "--no-progress", "--speed-repeats", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    card = json.loads((out / "models" / "mobilenet_v2" / CARD_NAME).read_text())
    assert card["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "calibration" in card and "rejection" in card
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["machine"]["device"] == "cpu"
    assert "nproc_per_node=2" in run.stderr  # the command it ran is shown
    assert "--nproc 2" in metrics["command"] and "--device cpu" in metrics["command"]  # and how to redo the run


def test_compare_refuses_a_gpu_it_does_not_have(tmp_path, folder):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = subprocess.run([sys.executable, "-m", "image_classifier", "compare", str(folder), "--device", "cuda:0",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=_env())
    assert run.returncode == 2 and "no CUDA GPU is available" in run.stderr
    run = subprocess.run([sys.executable, "-m", "image_classifier", "compare", str(folder), "--nproc", "0",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=_env())
    assert run.returncode == 2 and "--nproc must be at least 1" in run.stderr
