"""The offline teacher cache end to end: build it with the CLI, load it with `datasets`, train from
it, resume a build, and refuse every mismatch by name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from hf_cot_distill.cli import main
from hf_cot_distill.trainers.teacher_cache import TeacherCache, pack_bits, unpack_bits
from tests.test_hub import api, hub, online  # noqa: F401  (fixtures)
from tests.test_train_cli import _messages_dataset, _tiny_pair
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes/tiny/kd_messages.yaml")


@pytest.mark.parametrize("bits", [1, 4, 17, 18, 22, 31])
def test_bit_packing_round_trips(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, size=257)
    packed = pack_bits(values, bits)
    assert len(packed) == -(-257 * bits // 8)  # the arithmetic minimum, to the byte
    assert (unpack_bits(packed, bits, 257) == values).all()
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([2**bits]), bits)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    models = _tiny_pair(tmp, tiny_qwen2_tokenizer())
    return tmp, models, _messages_dataset(tmp)


def _args(models, data, *extra):
    return [
        "--config", RECIPE, "--model_name_or_path", str(models["student"]),
        "--teacher_model_name_or_path", str(models["teacher"]), "--dataset_name", str(data), *extra,
    ]  # fmt: skip


def _cache(setup, name, *extra):
    tmp, models, data = setup
    out = tmp / name
    assert (
        main(
            [
                "cache-teacher",
                *_args(models, data, "--output_dir", str(tmp / "unused"), "--out", str(out), *extra),
            ]
        )
        == 0
    )
    return out


def test_build_load_and_card(setup, capsys):
    out = _cache(setup, "sampled", "--samples", "12", "--rows-per-shard", "5")
    info = json.loads((out / "cache_info.json").read_text())
    assert info["complete"] and info["rows"] == 12 and info["shards"] == 3
    assert info["settings"]["sections"] == ["cot"]  # what the recipe (supervision_preset: cot) distils
    # 12 draws of a near-uniform tiny teacher are ~12 distinct ids of id_bits + count_bits each
    layout_bits = info["settings"]["samples"] and (int(np.ceil(np.log2(info["vocab_size"]))) + 4)
    stats = info["stats"]
    assert stats["positions"] == stats["positions_by_section"]["cot"] > 0
    expected = stats["targets_per_position"] * layout_bits / 8 + 3  # + n_targets (1 B) + entropy (2 B)
    assert abs(stats["bytes_per_position"] - expected) < 1.0  # byte rounding per row only
    ds = load_dataset(str(out), split="train")
    assert len(ds) == 12 and ds["row"] == list(range(12))
    card = (out / "README.md").read_text()
    assert "Teacher cache" in card and "teacher-cache" in card and "bytes per position" in card
    cache = TeacherCache(out)
    ids, weights, entropy = cache.decode(3)
    assert ids.shape[0] == len(entropy) and np.allclose(weights.sum(1), 1.0)


@pytest.mark.parametrize("mode", ["sampled", "topk"])
def test_shards_carry_no_blob_statistics_and_the_card_counts_bytes_exactly(setup, mode):
    """The packed byte columns are written without parquet statistics (min/max copies of the
    blobs), the integer columns keep theirs; the card's bytes per position are exact: the payload
    equals the format's arithmetic (per row, n_targets 1 B + entropy 2 B per position and
    ceil(bits / 8) of packed pairs; top-K: packed ids + 2 B per log-prob + 2 B tail) and the files
    figure is the shards' sizes over the positions."""
    import io

    import pyarrow.parquet as pq

    out = _cache(
        setup, f"stats_{mode}", "--mode", mode, "--samples", "12", "--k", "7", "--rows-per-shard", "5",
        "--positions", "all",
    )  # fmt: skip
    info = json.loads((out / "cache_info.json").read_text())
    id_bits = math.ceil(math.log2(info["vocab_size"]))
    payload = positions = 0
    shards = sorted((out / "data").glob("*.parquet"))
    for path in shards:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                assert col.is_stats_set == (col.physical_type != "BYTE_ARRAY"), col.path_in_schema
        for rec in pq.read_table(path).to_pylist():
            p = rec["n_positions"]
            positions += p
            if mode == "sampled":
                distinct = int(np.frombuffer(rec["n_targets"], dtype=np.uint8).sum())
                payload += 3 * p + -(-distinct * (id_bits + 4) // 8)  # count_bits = ceil(log2 12) = 4
            else:
                payload += -(-p * 7 * id_bits // 8) + 2 * 7 * p + 2 * p
        table = pq.read_table(path)  # the option matters: with statistics the same table is larger
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none")
        assert len(buf.getvalue()) > path.stat().st_size
    stats = info["stats"]
    assert stats["positions"] == positions
    assert stats["bytes_per_position"] == payload / positions
    assert stats["file_bytes_per_position"] == sum(p.stat().st_size for p in shards) / positions
    assert f"{payload / positions:.2f}" in (out / "README.md").read_text()
    # the build's counted FLOPs: the teacher body over every token once (every token but each row's
    # first is a cached position here), its lm_head over the cached positions
    from transformers import AutoModelForCausalLM

    from hf_cot_distill.models.compute import body_parameter_count

    teacher = AutoModelForCausalLM.from_pretrained(setup[1]["teacher"])
    assert stats["tokens_forwarded"] == positions + info["rows"]
    expected_flops = 2 * body_parameter_count(teacher) * stats["tokens_forwarded"]
    expected_flops += 2 * info["vocab_size"] * teacher.config.hidden_size * positions
    assert stats["build_flops"] == expected_flops


def test_train_from_a_full_topk_cache_equals_online(setup):
    """K = V with no tail: the cached forward KL is the full one, so the run follows the online run
    (up to the float16 storage of the teacher log-probs)."""
    tmp, models, data = setup
    out = _cache(setup, "topk_full", "--mode", "topk", "--k", "1000")
    online_run, cached = tmp / "online", tmp / "cached"
    assert main(["train", *_args(models, data, "--output_dir", str(online_run), "--max_steps", "2")]) == 0
    assert (
        main(
            [
                "train",
                *_args(
                    models, data, "--output_dir", str(cached), "--max_steps", "2", "--teacher_cache", str(out)
                ),
            ]
        )
        == 0
    )
    a = [r for r in json.loads((online_run / "log_history.json").read_text()) if "loss" in r]
    b = [r for r in json.loads((cached / "log_history.json").read_text()) if "loss" in r]
    for ra, rb in zip(a, b, strict=True):
        # fp16 log-probs: |dp| <= p * 2^-11 per token, so KL moves by < 1e-3 relative here
        assert abs(ra["kd/cot"] - rb["kd/cot"]) <= 2e-3 * abs(ra["kd/cot"]) + 1e-5
        assert abs(ra["ce/cot"] - rb["ce/cot"]) <= 1e-3 * abs(ra["ce/cot"])
    metrics = json.loads((cached / "train_metrics.json").read_text())
    assert "teacher cache" in (cached / "README.md").read_text()
    assert metrics["train_loss"] > 0


def test_sampled_cache_trains_and_resumes(setup, monkeypatch):
    from datasets import load_dataset

    import hf_cot_distill.trainers.teacher_cache as tc

    tmp, models, data = setup
    whole = _cache(setup, "resume_whole", "--samples", "8", "--rows-per-shard", "4")
    before = {p.name: p.read_bytes() for p in sorted((whole / "data").glob("*.parquet"))}
    assert len(before) >= 2 and not (whole / tc.PARTIAL).exists()

    real, built = tc.build_shard, []

    def interrupted(*args, **kwargs):  # Ctrl-C while the second shard is being built
        if len(built) == 1:
            raise KeyboardInterrupt
        built.append(args[2])
        return real(*args, **kwargs)

    out = tmp / "resume"
    monkeypatch.setattr(tc, "build_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _cache(setup, "resume", "--samples", "8", "--rows-per-shard", "4")
    # nothing a reader takes for a finished cache: no data/, the shard built so far is hidden
    assert not (out / "data").exists() and len(list((out / tc.PARTIAL / "data").glob("*.parquet"))) == 1
    with pytest.raises(Exception, match="(?i)no .*data files|unable to find"):
        load_dataset(str(out))
    with pytest.raises(ValueError, match="complete False"):
        TeacherCache(out)

    built.clear()
    monkeypatch.setattr(tc, "build_shard", lambda *a, **k: (built.append(a[2]), real(*a, **k))[1])
    _cache(setup, "resume", "--samples", "8", "--rows-per-shard", "4")
    assert len(built) == len(before) - 1  # the finished shard was not built again
    assert {p.name: p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))} == before  # same draws
    assert not (out / tc.PARTIAL).exists() and load_dataset(str(out))["train"].num_rows > 0
    run = tmp / "from_sampled"
    assert (
        main(
            [
                "train",
                *_args(
                    models, data, "--output_dir", str(run), "--max_steps", "2", "--teacher_cache", str(out)
                ),
            ]
        )
        == 0
    )


def test_refusals(setup, capsys):
    tmp, models, data = setup
    out = _cache(setup, "refusals", "--samples", "4")

    def run(*extra):
        argv = _args(
            models, data, "--output_dir", str(tmp / "r"), "--max_steps", "1", "--teacher_cache", str(out)
        )
        return main(["train", *argv, *extra])

    assert run("--temperature", "2.0") == 2
    assert "temperature=2.0: the teacher cache" in capsys.readouterr().err
    assert run("--supervision_preset", "cot+answer") == 2
    err = capsys.readouterr().err
    assert "distils ['answer', 'cot'] but the teacher cache" in err and "holds only ['cot']" in err
    assert run("--max_length", "64") == 2
    assert "max_length: cache 512, run 64" in capsys.readouterr().err
    assert run("--divergence", "jsd") == 2
    assert "divergence='jsd' with teacher_cache" in capsys.readouterr().err
    # building into a folder that is not a cache of these settings
    assert (
        main(
            [
                "cache-teacher",
                *_args(models, data, "--output_dir", str(tmp / "u"), "--out", str(out), "--samples", "5"),
            ]
        )
        == 2
    )
    assert "holds a teacher cache built with other settings (settings:" in capsys.readouterr().err
    stranger = tmp / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert (
        main(["cache-teacher", *_args(models, data, "--output_dir", str(tmp / "u"), "--out", str(stranger))])
        == 2
    )
    assert (
        "is not empty (notes.txt)" in capsys.readouterr().err
        and (stranger / "notes.txt").read_text() == "mine"
    )
    # a damaged shard is named
    shard = sorted((out / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert run() == 2
    assert shard.name in capsys.readouterr().err


def test_packing_and_accumulation_from_the_cache_match_padded(setup):
    tmp, models, data = setup
    out = _cache(setup, "batching", "--samples", "8")

    def losses(name, *extra):
        run = tmp / name
        argv = _args(models, data, "--output_dir", str(run), "--max_steps", "2", "--teacher_cache", str(out))
        assert main(["train", *argv, "--train_sampling_strategy", "sequential", *extra]) == 0
        return [r["loss"] for r in json.loads((run / "log_history.json").read_text()) if "loss" in r]

    padded = losses("padded")
    assert losses("packed", "--padding_free", "true") == pytest.approx(padded, rel=1e-4, abs=1e-5)
    accumulated = losses(
        "accumulated", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"
    )
    assert accumulated == pytest.approx(padded, rel=1e-4, abs=1e-5)


def test_a_truncation_that_is_not_a_prefix_is_refused(setup, capsys):
    tmp, models, data = setup
    out = _cache(setup, "window", "--samples", "4")
    argv = _args(
        models, data, "--output_dir", str(tmp / "w"), "--max_steps", "1", "--teacher_cache", str(out)
    )
    window = [
        "--truncation_policy",
        "keep_window",
        "--truncation_kwargs",
        '{"position": "right", "window_proportion": 0.5}',
    ]
    assert main(["train", *argv, *window]) == 2
    err = capsys.readouterr().err
    assert "are not a prefix of it" in err and "follows the start" in err and "lead_span_proportion" in err


def test_a_cache_pushes_as_a_dataset(setup, hub, monkeypatch, capfd):  # noqa: F811 (fixture)
    from tests.test_hub import TOKEN, local_files

    out = _cache(setup, "push", "--samples", "4")
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(out), "--repo-id", "me/cache", "--repo-type", "dataset"]) == 0
    assert hub.files("dataset", "me/cache") == local_files(out)
    assert TOKEN not in "".join(capfd.readouterr())
