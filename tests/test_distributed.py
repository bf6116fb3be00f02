"""Real multi-process training on CPU: DeepSpeed ZeRO-2/3 (gloo, 2 processes) vs one process, and resume.

Each run goes through the user's path: ``torchrun -m hf_cot_distill.cli train --config ...``.
With ``train_sampling_strategy: sequential`` the global batch of 2 processes x 2 rows is the
same 4 rows as one process x 4 rows, so the per-step losses and the final weights must match.
The first DeepSpeed run on a machine JIT-builds its CPU comm op (a few minutes, cached).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/tiny/kd_messages.yaml")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    models = _tiny_pair(base, tiny_qwen2_tokenizer())
    return {"base": base, "data": _messages_dataset(base), **models}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(assets, out: Path, *extra: str, nproc: int = 1) -> list[float]:
    args = [
        "train", "--config", RECIPE, "--model_name_or_path", str(assets["student"]),
        "--teacher_model_name_or_path", str(assets["teacher"]), "--dataset_name", str(assets["data"]),
        "--output_dir", str(out), "--train_sampling_strategy", "sequential", *extra,
    ]  # fmt: skip
    _run_cli(args, nproc)
    history = json.loads((out / "log_history.json").read_text())
    return [h["loss"] for h in history if "loss" in h]


@pytest.fixture(scope="module")
def single(assets):
    out = assets["base"] / "single"
    return _train(assets, out, "--per_device_train_batch_size", "4", "--max_steps", "3"), out


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_two_processes_match_one_process(assets, single, stage):
    ref_losses, ref_dir = single
    out = assets["base"] / f"zero{stage}"
    losses = _train(
        assets, out, "--per_device_train_batch_size", "2", "--max_steps", "3",
        "--deepspeed", str(ROOT / f"recipes/deepspeed/zero{stage}.json"), nproc=2,
    )  # fmt: skip
    assert len(losses) == 3
    assert losses == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    # The saved checkpoint (gathered 16-bit weights under ZeRO-3) reloads as safetensors and
    # equals the single-process result.
    ours, ref = load_file(str(out / "model.safetensors")), load_file(str(ref_dir / "model.safetensors"))
    assert ours.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-5)


def test_resume_continues_the_same_loss_curve(assets):
    # An uninterrupted 4-step run that also leaves checkpoint-2, as an interrupted run would.
    full = assets["base"] / "full"
    straight = _train(
        assets, full, "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_strategy", "steps",
        "--save_steps", "2",
    )  # fmt: skip
    assert (full / "checkpoint-2").is_dir() and len(straight) == 4
    resumed_dir = assets["base"] / "resumed"
    resumed = _train(
        assets, resumed_dir, "--per_device_train_batch_size", "2", "--max_steps", "4",
        "--resume_from_checkpoint", str(full / "checkpoint-2"),
    )  # fmt: skip
    assert resumed[-2:] == pytest.approx(straight[2:], rel=1e-5)
    ours, ref = load_file(str(resumed_dir / "model.safetensors")), load_file(str(full / "model.safetensors"))
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-5, atol=1e-6)


# ---- the teacher cache under several processes -------------------------------------------------


def _run_cli(args: list[str], nproc: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "hf_cot_distill.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "hf_cot_distill.cli", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def cache_dirs(assets):
    """The same cache built by one process and by two (each rank writes its shards)."""
    dirs = {}
    for nproc in (1, 2):
        out = assets["base"] / f"cache_{nproc}p"
        _run_cli(
            ["cache-teacher", "--config", RECIPE, "--model_name_or_path", str(assets["student"]),
             "--teacher_model_name_or_path", str(assets["teacher"]), "--dataset_name", str(assets["data"]),
             "--output_dir", str(assets["base"] / "unused"), "--out", str(out), "--rows-per-shard", "3",
             "--samples", "16"],
            nproc,
        )  # fmt: skip
        dirs[nproc] = out
    return dirs


def test_two_process_cache_build_equals_one_process(cache_dirs):
    one, two = cache_dirs[1], cache_dirs[2]
    shards = sorted(p.name for p in (one / "data").glob("*.parquet"))
    assert len(shards) == 4 and shards == sorted(p.name for p in (two / "data").glob("*.parquet"))
    for name in shards:  # per-shard seeds: the same draws whichever rank built the shard
        assert (one / "data" / name).read_bytes() == (two / "data" / name).read_bytes()
    info1, info2 = (json.loads((d / "cache_info.json").read_text()) for d in (one, two))
    assert info1 == info2 and info1["complete"]


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_from_the_cache_matches_one_process(assets, cache_dirs, stage):
    cache = str(cache_dirs[1])
    ref = _train(assets, assets["base"] / f"cached_single{stage}", "--per_device_train_batch_size", "4",
                 "--max_steps", "2", "--teacher_cache", cache)  # fmt: skip
    losses = _train(
        assets, assets["base"] / f"cached_zero{stage}", "--per_device_train_batch_size", "2", "--max_steps", "2",
        "--teacher_cache", cache, "--deepspeed", str(ROOT / f"recipes/deepspeed/zero{stage}.json"), nproc=2,
    )  # fmt: skip
    assert losses == pytest.approx(ref, rel=1e-4, abs=1e-5)


def test_cache_built_by_a_zero3_teacher_matches_one_process(assets, cache_dirs):
    """The teacher sharded by ZeRO-3 over 2 processes, as in training: the full top-K (K = V)
    distributions equal one process's within the float16 storage (ids are a permutation: compare
    per id)."""
    from hf_cot_distill.trainers.teacher_cache import TeacherCache

    outs = {}
    for nproc, extra in ((1, []), (2, ["--deepspeed", str(ROOT / "recipes/deepspeed/zero3.json")])):
        out = assets["base"] / f"topk_{nproc}p"
        _run_cli(
            ["cache-teacher", "--config", RECIPE, "--model_name_or_path", str(assets["student"]),
             "--teacher_model_name_or_path", str(assets["teacher"]), "--dataset_name", str(assets["data"]),
             "--output_dir", str(assets["base"] / "unused"), "--out", str(out), "--rows-per-shard", "3",
             "--mode", "topk", "--k", "100000", *extra],
            nproc,
        )  # fmt: skip
        outs[nproc] = TeacherCache(out)
    one, two = outs[1], outs[2]
    assert one.rows == two.rows == 12
    for row in range(one.rows):
        (ids1, p1, _), (ids2, p2, _) = one.decode(row), two.decode(row)
        assert ids1.shape == ids2.shape
        order1, order2 = np.argsort(ids1, 1), np.argsort(ids2, 1)
        assert (np.take_along_axis(ids1, order1, 1) == np.take_along_axis(ids2, order2, 1)).all()
        # fp16 log-probs (relative step 2^-11) of fp32 values that differ in the last bits: |dp| <= p 2^-10
        a, b = np.take_along_axis(p1, order1, 1), np.take_along_axis(p2, order2, 1)
        assert (np.abs(a - b) <= a * 2**-10 + 1e-7).all()


@contextlib.contextmanager
def _one_process_group():
    """A one-process gloo group for the test, torn down afterwards whatever the code under test did."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_a_finished_cli_run_tears_its_process_group_down(monkeypatch):
    """The CLI ends a multi-process run itself (barrier, then destroy) instead of leaving it to
    interpreter shutdown, where a rank's communication threads can abort a run that succeeded."""
    from hf_cot_distill import cli

    monkeypatch.setitem(cli.RAW_HANDLERS, "_probe", lambda rest: 0)
    with _one_process_group():
        assert cli.main(["_probe"]) == 0
        assert not torch.distributed.is_initialized()
    # A failed rank does not wait at the barrier for the others.
    monkeypatch.setitem(cli.RAW_HANDLERS, "_probe", lambda rest: 3)
    calls = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append(a))
    with _one_process_group():
        assert cli.main(["_probe"]) == 3
        assert calls == [] and not torch.distributed.is_initialized()
