"""The mini-reproductions: statistics, report writer, sweep specs; slow: each one end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hf_cot_distill.core.tables import parse_markdown_table
from hf_cot_distill.data.builder import load_generator_yaml
from hf_cot_distill.experiments import reproduce
from hf_cot_distill.experiments.reproduce_report import (
    betainc,
    parse_ci,
    r2_verdicts,
    separated,
    summarize,
    t_quantile,
    write_r1,
    write_r2,
    write_r3,
)
from hf_cot_distill.pipelines.recipe import (
    DataArguments,
    ModelArguments,
    load_recipe_yaml,
    parse_recipe,
    recipe_argv,
)
from hf_cot_distill.pipelines.sweep import grid_points, load_sweep
from hf_cot_distill.trainers.kd_config import SectionKDConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "reproductions" / "sweeps").glob("*.yaml"))
TYPES = (ModelArguments, DataArguments, SectionKDConfig)

# Two-sided 95% Student-t quantiles t_{0.975, df} (standard tables / scipy.stats.t.ppf).
T975 = {1: 12.706204736174698, 2: 4.302652729911275, 4: 2.7764451051977987, 9: 2.2621571627409915}
T975[30] = 2.0422724563012373


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_tables(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-9)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], abs=1e-9)
    assert t_quantile(0.5, df) == pytest.approx(0.0, abs=1e-12)


def test_t_quantile_other_levels():
    assert t_quantile(0.95, 2) == pytest.approx(2.919985580355516, abs=1e-9)  # 90% two-sided, df 2
    assert t_quantile(0.995, 5) == pytest.approx(4.032142983557536, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_betainc_known_values():
    assert betainc(2.0, 2.0, 0.5) == pytest.approx(0.5, abs=1e-14)
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-14)  # uniform
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - sum binomial terms
    assert betainc(0.5, 0.5, 0.0) == 0.0 and betainc(0.5, 0.5, 1.0) == 1.0


def test_summarize_exact():
    s = summarize([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    half = T975[2] / math.sqrt(3)
    assert s["ci_half_width"] == pytest.approx(half, abs=1e-9)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-9)
    s5 = summarize([0.40, 0.42, 0.38, 0.41, 0.39])
    std = math.sqrt(sum((x - 0.40) ** 2 for x in (0.40, 0.42, 0.38, 0.41, 0.39)) / 4)
    assert s5["std"] == pytest.approx(std) and s5["ci_half_width"] == pytest.approx(
        T975[4] * std / math.sqrt(5)
    )
    one = summarize([0.7])
    assert one["mean"] == 0.7 and one["std"] is None and one["ci_low"] is None
    with pytest.raises(ValueError):
        summarize([])


def test_separated():
    a, b, c = summarize([0.9, 0.91, 0.92]), summarize([0.1, 0.11, 0.12]), summarize([0.0, 1.0, 0.5])
    assert separated(a, b) == 1 and separated(b, a) == -1 and separated(a, c) == 0
    assert separated(summarize([1.0]), b) == 0


def test_drop_levels_are_the_papers_relative_levels():
    assert reproduce.drop_levels(39) == [0, 10, 20, 30, 39]
    assert reproduce.drop_levels(4) == [0, 1, 2, 3, 4]
    assert reproduce.drop_levels(8) == [0, 2, 4, 6, 8]  # the R2 CPU size: K = 9


# --------------------------------------------------------------------------- report writer
def _baselines(**kw) -> dict:
    return {
        "baseline_uniform": 0.04,
        "baseline_marginal_majority": 0.2,
        "baseline_in_context_majority": 0.22,
    } | kw


META = {
    "title": "fake",
    "setup": "fake setup",
    "size": "cpu",
    "seeds": [0, 1, 2],
    "eval_count": 512,
    "wall_time_s": 1.0,
    "threads": "torch threads: 1",
    "seed_note": "data order",
    "commands": ["hf-cot-distill reproduce R1"],
}


def _check_files(md_path: Path) -> tuple[str, dict]:
    stem = md_path.with_suffix("")
    assert md_path.is_file() and stem.with_suffix(".png").stat().st_size > 1000
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return md_path.read_text(), json.loads(stem.with_suffix(".json").read_text())


def test_write_r1_round_trip(tmp_path):
    acc = {("standard", 100): [0.2, 0.25, 0.3], ("standard", 200): [0.3, 0.32, 0.34]}
    acc |= {("cot", 100): [0.5, 0.52, 0.54], ("cot", 200): [0.6, 0.6, 0.6]}
    records = [
        {"strategy": st, "step": step, "seed": i, "answer_accuracy": a, "chain_accuracy": a / 2, "count": 512}
        | _baselines()
        for (st, step), vals in acc.items()
        for i, a in enumerate(vals)
    ]
    md, data = _check_files(write_r1(tmp_path, "R1_x", records, META))
    rows = parse_markdown_table(md, "task family")
    assert len(rows) == 4 and {r["strategy"] for r in rows} == {"standard", "cot"}
    for row in rows:
        mean, half = parse_ci(row["answer_accuracy"])
        expect = summarize(acc[(row["strategy"], int(row["step"]))])
        assert mean == pytest.approx(expect["mean"], abs=5e-4)
        assert half == pytest.approx(expect["ci_half_width"], abs=5e-4)
        assert float(row["baseline_in_context_majority"]) == pytest.approx(0.22)
    assert len(data["records"]) == 12 and len(data["aggregates"]) == 4
    assert any(
        "cot above standard (separated) at steps [100, 200]; never separated below" in s
        for s in data["statements"]
    )
    assert any(
        s.startswith("standard: final 0.320 ± ") and s.endswith("step 200.") for s in data["statements"]
    )
    assert "What is and is not observed" in md and "R1_x.png" in md


def test_write_r2_round_trip(tmp_path):
    records = []
    for alpha, base in ((0.0, 0.6), (1.0, 0.5), (math.inf, 0.4)):
        for k in range(5):
            for seed, noise in enumerate((-0.01, 0.0, 0.01)):
                acc = base - (0.1 * k if alpha == 0 else 0.0) + noise
                records.append(
                    {"alpha": alpha, "seed": seed, "n_context": 4, "drop_k": k, "drop_fraction": k / 4}
                    | {"answer_accuracy": acc, "chain_accuracy": acc, "count": 512}
                    | _baselines()
                )
    md, data = _check_files(write_r2(tmp_path, "R2_x", records, META))
    rows = {r["alpha"]: r for r in parse_markdown_table(md, "alpha")}
    assert set(rows) == {"0", "1", "inf"}
    assert parse_ci(rows["0"]["drop 4/4"])[0] == pytest.approx(0.2, abs=5e-4)
    assert parse_ci(rows["inf"]["drop 0/4"])[0] == pytest.approx(0.4, abs=5e-4)
    assert rows["0"]["mean CoT share"] == "1" and rows["inf"]["mean CoT share"] == "0"
    assert data["records"][-1]["alpha"] == "inf"  # strict JSON: no Infinity literal
    claim = next(s for s in data["statements"] if s.startswith("Paper's claim"))
    assert "lower (separated)" in claim
    regime = next(s for s in data["statements"] if s.startswith("Regime:"))
    assert "scores 0.600 ± " in regime and "does NOT reach the 0.7 answer accuracy" in regime
    verdict = next(s for s in data["statements"] if s.startswith("Verdict on"))
    assert "OBSERVED: alpha=1, alpha=inf above alpha=0 (separated)" in verdict
    assert "Best alpha > 0 there: alpha=1 0.500 ± " in verdict and verdict.endswith(
        "(the paper: up to +300%)."
    )
    assert "+150% relative to alpha=0; best mixed recipe (0 < alpha < inf): alpha=1 0.500 ± " in verdict


def test_r2_verdicts_reached_and_reversed():
    at = {
        (0.0, 0): summarize([0.8, 0.82, 0.84]),
        (0.0, 8): summarize([0.6, 0.61, 0.62]),
        (2.0, 0): summarize([0.7, 0.7, 0.7]),
        (2.0, 8): summarize([0.3, 0.31, 0.32]),
        (math.inf, 0): summarize([0.5, 0.6, 0.7]),
        (math.inf, 8): summarize([0.2, 0.6, 0.9]),
    }
    regime, verdict = r2_verdicts(at, [0.0, 2.0, math.inf], [0, 8], 8)
    assert "drop 0/8) scores 0.820 ± " in regime and "it reaches the 0.7" in regime
    assert "NOT observed, reversed: alpha=0 above alpha=2 (separated)" in verdict
    assert "Best alpha > 0 there: alpha=inf 0.567 ± " in verdict and "-7% relative" in verdict
    assert "best mixed recipe (0 < alpha < inf): alpha=2 0.310 ± " in verdict and "-49% relative" in verdict
    at[(2.0, 8)] = summarize([0.55, 0.6, 0.65])
    assert "NOT observed: no alpha > 0 is separated" in r2_verdicts(at, [0.0, 2.0, math.inf], [0, 8], 8)[1]
    assert r2_verdicts({k: v for k, v in at.items() if k[0] != 0.0}, [2.0, math.inf], [0, 8], 8) == []


def test_write_r3_round_trip(tmp_path):
    records = []
    for alloc, q in (("prompt+cot+answer", 0.9), ("cot", 0.5)):
        for lsp in (0.5, 1.0):
            for seed, noise in enumerate((-0.02, 0.0, 0.02)):
                qr = q * (0.9 if lsp == 0.5 else 1.0) + noise
                records.append(
                    {
                        "group": "main",
                        "allocation": alloc,
                        "lsp": lsp,
                        "seed": seed,
                        "ce_sections": "cot+answer",
                    }
                    | {"answer_accuracy": 0.4 * qr, "quality_retained": qr, "count": 512}
                    | {"answer_parsed_rate": 0.3 if alloc == "cot" else 1.0}
                    | {"tokens_forwarded": 1000 * lsp, "flops_counted": 1e9 * lsp}
                    | _baselines()
                )
    records += [
        {"group": "control", "allocation": "cot", "lsp": 1.0, "seed": s, "ce_sections": "cot"}
        | {"answer_accuracy": 0.0, "quality_retained": 0.0, "tokens_forwarded": 1000, "flops_counted": 1e9}
        for s in range(3)
    ]
    meta = META | {"teacher": {"answer_accuracy": 0.4, "count": 512} | _baselines()}
    md, data = _check_files(write_r3(tmp_path, "R3_x", records, meta))
    rows = parse_markdown_table(md, "KD allocation")
    assert len(rows) == 4
    half = next(r for r in rows if r["KD allocation"] == "cot" and r["lead span"] == "0.5")
    assert parse_ci(half["quality_retained"])[0] == pytest.approx(0.45, abs=5e-4)
    assert float(half["flops_vs_full"]) == pytest.approx(0.5)
    assert "Control: CE on the same sections as KD" in md and "Teacher answer accuracy 0.400" in md
    assert any("best KD allocation prompt+cot+answer" in s for s in data["statements"])
    assert float(half["answer_parsed"]) == pytest.approx(0.3) and float(half["best_chance_baseline"]) == 0.22
    # cot at 0.5: accuracy 0.4 * 0.45 = 0.18 < 0.22 -> at chance; 30% parsed answers -> a format failure
    chance = next(
        s for s in data["statements"] if s.startswith("Not clear of the best chance baseline 0.220")
    )
    assert "cot at 0.5" in chance and "prompt+cot+answer" not in chance
    fmt = next(s for s in data["statements"] if s.startswith("An answer is parsed in under half"))
    assert "cot at 0.5; cot at 1." in fmt


# --------------------------------------------------------------------------- sweep specs
def test_every_reproduction_names_existing_sweeps():
    names = {p.name for p in SWEEPS}
    assert set(reproduce.SWEEP_FILES) == set(reproduce.NAMES)
    for name, sizes in reproduce.SWEEP_FILES.items():
        # R3-champ (the real SmolLM2 teacher on CHAMP traces) is a CPU reproduction only
        want = {"cpu"} if name == "R3-champ" else set(reproduce.SIZES)
        assert set(sizes) == want and name in reproduce.TOPICS and name in reproduce.report.TEXTS
        for size in sizes:
            assert set(sizes[size].values()) <= names, (name, size)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_spec_validates(path, tmp_path):
    spec = load_sweep(path)
    raw = load_recipe_yaml(ROOT / spec["recipe"])
    extra = ["--output_dir", str(tmp_path)] + (["--bf16", "false"] if raw.get("bf16") else [])
    for point in grid_points(spec["grid"]):
        overrides = recipe_argv({**spec["set"], **point}, TYPES) + extra
        _, data, _ = parse_recipe(TYPES, ROOT / spec["recipe"], overrides)
        if data.dataset_name.startswith("generator:") and data.dataset_name.endswith(".yaml"):
            load_generator_yaml(ROOT / data.dataset_name.split(":", 1)[1])
    if "_cpu" in path.stem and "teacher" not in path.stem:
        assert len(spec["grid"].get("seed", [])) >= 3, "every CPU reproduction runs >= 3 seeds"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "recipes" / "reproductions" / "generators").glob("*.yaml")), ids=lambda p: p.name
)
def test_generator_yaml_validates(path):
    load_generator_yaml(path)


def test_resolve_sweep_moves_roots_and_overrides(tmp_path):
    remap: dict[str, str] = {}
    sweeps = reproduce.SWEEPS_DIR
    teacher = reproduce.resolve_sweep(sweeps / "r3_cpu_teacher.yaml", tmp_path, remap)
    students = reproduce.resolve_sweep(
        sweeps / "r3_cpu_students.yaml",
        tmp_path,
        remap,
        seeds=[7, 8],
        set_overrides={"max_steps": 3},
        grid_overrides={"supervision_preset": ["cot"]},
    )
    assert teacher["output_root"] == str(tmp_path / "r3_cpu_teacher")
    assert students["set"]["teacher_model_name_or_path"] == str(tmp_path / "r3_cpu_teacher" / "seed=0")
    assert students["grid"]["seed"] == [7, 8] and students["grid"]["supervision_preset"] == ["cot"]
    assert students["set"]["max_steps"] == 3
    # the students share one teacher cache (built by the sweep); set_overrides can turn it off
    assert students["set"]["teacher_cache"] == "auto"
    assert students["teacher_cache_options"] == {"mode": "topk", "k": 32}
    online = reproduce.resolve_sweep(
        sweeps / "r3_cpu_students.yaml", tmp_path, remap, set_overrides={"teacher_cache": None}
    )
    assert online["set"]["teacher_cache"] is None


def test_r3_students_train_from_one_teacher_cache(tmp_path, monkeypatch):
    """The R3 CPU sweeps as reproduce runs them (seeds and SMOKE_SET overridden), with the cache build
    and the training stubbed: one cache per student sweep, built before its students, every student
    trained from it; the teacher sweep (CE only) builds none."""
    import hf_cot_distill.pipelines.train
    from hf_cot_distill.pipelines import cache_teacher

    events = []

    def run_cache_teacher(model_args, data_args, kd_args, settings, out_dir, progress=True):
        events.append(("cache", Path(out_dir), settings.mode, settings.k, settings.sections))
        assert data_args.generator_num_tasks == reproduce.SMOKE_SET["generator_num_tasks"]
        return Path(out_dir)

    def run_training(model_args, data_args, kd_args, recipe_path=None):
        events.append(("train", Path(kd_args.output_dir).parent.name, kd_args.teacher_cache, kd_args.seed))
        Path(kd_args.output_dir, "train_metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(cache_teacher, "run_cache_teacher", run_cache_teacher)
    monkeypatch.setattr(hf_cot_distill.pipelines.train, "run_training", run_training)
    monkeypatch.chdir(reproduce.ROOT)
    lead_spans = {"truncation_kwargs": [{"lead_span_proportion": 0.5}, {"lead_span_proportion": 1.0}]}
    runs = reproduce._run_sweeps(
        "R3", "cpu", tmp_path, seeds=[4, 5], set_overrides=reproduce.SMOKE_SET, grid_overrides=lead_spans
    )
    students, control = tmp_path / "r3_cpu_students", tmp_path / "r3_cpu_ce_follows_kd"
    caches = [e for e in events if e[0] == "cache"]
    assert caches == [
        ("cache", students / "teacher_cache", "topk", 32, ("prompt", "cot", "answer")),
        ("cache", control / "teacher_cache", "topk", 32, ("cot",)),
    ]
    trained = [e for e in events if e[0] == "train"]
    assert trained[0] == ("train", "r3_cpu_teacher", None, 0)  # the teacher: CE only, no cache
    assert events.index(caches[0]) < events.index(
        ("train", "r3_cpu_students", str(students / "teacher_cache"), 4)
    )
    by_sweep = {
        name: [e[2:] for e in trained if e[1] == name] for name in ("r3_cpu_students", "r3_cpu_ce_follows_kd")
    }
    assert len(by_sweep["r3_cpu_students"]) == 4 * 2 * 2 and len(by_sweep["r3_cpu_ce_follows_kd"]) == 2
    assert {c for c, _ in by_sweep["r3_cpu_students"]} == {str(students / "teacher_cache")}
    assert {c for c, _ in by_sweep["r3_cpu_ce_follows_kd"]} == {str(control / "teacher_cache")}
    assert {s for _, s in by_sweep["r3_cpu_students"]} == {4, 5}
    assert all(e["teacher_cache"] == str(students / "teacher_cache") for e in runs["main"][1])


def test_r3_counts_an_equal_share_of_the_cache_build(tmp_path, monkeypatch):
    """Students trained from a teacher cache log no teacher FLOPs: the R3 records add an equal
    share of the build's counted FLOPs (cache_info.json) over the points trained from it, the
    report shows the share and says how it was counted; a cache without a recorded build cost is
    named, its points keep their own FLOPs."""
    monkeypatch.chdir(reproduce.ROOT)
    spec = reproduce.resolve_sweep(reproduce.SWEEPS_DIR / "r3_cpu_students.yaml", tmp_path, {})
    points = grid_points(spec["grid"])[:3]
    recorded, unrecorded = tmp_path / "cache_a", tmp_path / "cache_b"
    recorded.mkdir()
    unrecorded.mkdir()
    (recorded / "cache_info.json").write_text(json.dumps({"stats": {"build_flops": 3.0e9, "positions": 9}}))
    (unrecorded / "cache_info.json").write_text(json.dumps({"stats": {"positions": 9}}))
    summary = []
    for i, (point, cache) in enumerate(zip(points, (recorded, recorded, unrecorded), strict=True)):
        out = tmp_path / f"point{i}"
        out.mkdir()
        log = {"tokens_forwarded": 100, "flops_counted": 1.0e9 * (i + 1), "flops_student": 1.0e9 * (i + 1)}
        (out / "log_history.json").write_text(json.dumps([log | {"flops_teacher": 0, "step": 4}]))
        (out / "train_metrics.json").write_text(json.dumps({"wall_time_s": 1.0}))
        summary.append({"point": point, "output_dir": str(out), "teacher_cache": str(cache)})
    shares = reproduce.cache_build_shares({"main": (spec, summary)})
    assert shares[str(recorded)] == {"build_flops": 3.0e9, "points": 2, "share": 1.5e9}
    assert shares[str(unrecorded)] == {"build_flops": None, "points": 1, "share": None}
    records, teacher = reproduce._r3_records({"main": (spec, summary)}, None)
    assert teacher is None
    assert [r["flops_counted"] for r in records] == [1.0e9 + 1.5e9, 2.0e9 + 1.5e9, 3.0e9]
    assert [r["flops_student"] for r in records] == [1.0e9, 2.0e9, 3.0e9]
    assert [r["flops_cache_share"] for r in records] == [1.5e9, 1.5e9, None]
    md, data = _check_files(write_r3(tmp_path, "R3_cache", records, META))
    rows = parse_markdown_table(md, "KD allocation")
    assert {r["of which cache build"] for r in rows} <= {"1.500e+09", "not recorded"}
    assert any(
        f"Teacher cache {recorded}: built once for 2 points (3.000e+09" in s and "share, 1.500e+09" in s
        for s in data["statements"]
    )
    assert any(f"Teacher cache {unrecorded}: its build cost is not recorded" in s for s in data["statements"])


def test_cli_arguments():
    from hf_cot_distill.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["reproduce", "R2", "--size", "gpu", "--seeds", "0", "1", "--threads", "0"])
    assert (args.name, args.size, args.seeds, args.threads, args.out) == (
        "R2",
        "gpu",
        [0, 1],
        0,
        "reproductions/runs",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "R4"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval-tasks", "0"], "argument --eval-tasks: '0' is not valid: must be an int >= 1"),
        (["--eval-tasks", "-1"], "argument --eval-tasks: '-1' is not valid: must be an int >= 1"),
        (["--threads", "-1"], "argument --threads: '-1' is not valid: must be an int >= 0"),
        (["--seeds", "0", "-1"], "argument --seeds: '-1' is not valid: must be an int >= 0"),
    ],
)
def test_cli_arguments_refuse_bad_numbers(argv, message, capsys):
    from hf_cot_distill.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["reproduce", "R1", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _no_sweeps(*args, **kwargs):
    raise AssertionError("nothing may run before the arguments are checked")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eval_tasks": 0}, "eval_tasks=0: must be an int >= 1"),
        ({"threads": -1}, "threads=-1: must be an int >= 1"),
        ({"seeds": [0, -1]}, r"seeds\[1\]=-1: must be an int >= 0 and <= 4294967295"),
    ],
)
def test_run_reproduction_checks_arguments_first(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "_run_sweeps", _no_sweeps)
    with pytest.raises(ValueError, match=message):
        reproduce.run_reproduction("R1", "cpu", tmp_path / "runs", report_dir=tmp_path, smoke=True, **kwargs)
    assert not (tmp_path / "runs").exists()


def test_run_from_args_turns_value_errors_into_exit_2(tmp_path, monkeypatch, capsys):
    from hf_cot_distill.cli import main

    def refused(*args, **kwargs):
        raise ValueError("sweep.yaml: point refused; fix: a new output_root")

    monkeypatch.setattr(reproduce, "run_reproduction", refused)
    assert main(["reproduce", "R1", "--smoke", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: sweep.yaml: point refused; fix: a new output_root\n"


def test_smoke_runs_keep_apart_from_full_runs(tmp_path, monkeypatch):
    """A smoke run neither resumes the full run's models nor writes over its report (and back)."""
    seen = []

    def fake_sweeps(name, size, out_dir, remap=None, **overrides):
        seen.append(("out", out_dir))
        return {"main": ({"grid": {"seed": [0]}, "set": overrides["set_overrides"]}, [])}

    def fake_writer(report_dir, stem, records, meta):
        seen.append(("report", report_dir / stem, meta["commands"][0]))
        return report_dir / f"{stem}.md"

    monkeypatch.setattr(reproduce, "_run_sweeps", fake_sweeps)
    monkeypatch.setattr(reproduce.report, "write_r1", fake_writer)
    runs = tmp_path / "runs"
    reproduce.run_reproduction("R1", "cpu", runs, smoke=True, threads=None)
    reproduce.run_reproduction("R1", "cpu", runs, threads=None)
    reproduce.run_reproduction("R1", "cpu", runs, smoke=True, report_dir=tmp_path / "rep", threads=None)
    assert seen == [
        ("out", runs / "R1_smoke"),
        (
            "report",
            runs / "R1_smoke" / "R1_cot_icl_lab_cpu_smoke",
            f"hf-cot-distill reproduce R1 --size cpu --out {runs} --smoke",
        ),
        ("out", runs / "R1"),
        (
            "report",
            reproduce.ROOT / "reproductions" / "R1_cot_icl_lab_cpu",
            f"hf-cot-distill reproduce R1 --size cpu --out {runs}",
        ),
        ("out", runs / "R1_smoke"),
        (
            "report",
            tmp_path / "rep" / "R1_cot_icl_lab_cpu_smoke",
            f"hf-cot-distill reproduce R1 --size cpu --out {runs} --smoke",
        ),
    ]


# --------------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["R1", "R2", "R3"])
def test_reproduction_end_to_end_smoke(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run must not depend on the working directory
    grid = {"truncation_kwargs": [{"lead_span_proportion": 0.5}, {"lead_span_proportion": 1.0}]}

    def run():
        return reproduce.run_reproduction(
            name,
            "cpu",
            tmp_path / "runs",
            report_dir=tmp_path / "rep",
            seeds=(0, 1),
            grid_overrides=grid,
            smoke=True,
        )

    md = run()
    text, data = _check_files(md)
    assert md.parent == tmp_path / "rep" and md.name.startswith(f"{name}_") and "smoke run" in text
    # R1: 2 strategies x 2 task families x 2 seeds x checkpoints 4 and 8 (the final model);
    # R2: 5 alphas x 2 seeds x 5 drop levels; R3: 4 allocations x 2 lead spans x 2 seeds + 2 control seeds.
    assert len(data["records"]) == {"R1": 16, "R2": 50, "R3": 18}[name]
    # a second run resumes: nothing is retrained, the evaluation is read from the cache
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("train_metrics.json")}
    again = run()
    assert json.loads(again.with_suffix(".json").read_text())["records"] == data["records"]
    assert stamps and stamps == {
        p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("train_metrics.json")
    }


@pytest.mark.slow
def test_main_runs_from_the_command_line(tmp_path):
    from hf_cot_distill.cli import main

    rc = main(
        [
            "reproduce",
            "R1",
            "--smoke",
            "--seeds",
            "0",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--report-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0 and (tmp_path / "R1_cot_icl_lab_cpu_smoke.md").is_file()
    assert not (tmp_path / "R1_cot_icl_lab_cpu.md").exists() and (tmp_path / "r" / "R1_smoke").is_dir()


# --------------------------------------------------------------------------- R2 pilot
def _pilot():
    import importlib.util

    path = ROOT / "reproductions" / "pilots" / "r2_pilot.py"
    spec = importlib.util.spec_from_file_location("r2_pilot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_r2_pilot_picks_the_cheapest_setting_over_the_bar():
    pilot = _pilot()
    fake = {"chain_accuracy": 0.5, "baseline_best": 0.2, "train_loss": 0.1, "eval_s": 2.0}
    results = [
        {"name": "base500", "answer_accuracy": 0.4, "train_s": 30.0} | fake,  # cheapest, below the bar
        {"name": "n1k9_800", "answer_accuracy": 0.95, "train_s": 100.0} | fake,
        {"name": "n1k9_500", "answer_accuracy": 0.7, "train_s": 60.0} | fake,  # the bar is inclusive
        {"name": "n1k5_1000", "answer_accuracy": 1.0, "train_s": 200.0} | fake,  # over the budget
    ]
    assert pilot.sweep_estimate_s(results[2]) == 15 * (60.0 + 5 * 2.0)
    assert pilot.pick(results)["name"] == "n1k9_500"
    assert pilot.pick(results, threshold=0.9)["name"] == "n1k9_800"
    assert pilot.pick(results, threshold=0.9, budget_s=15 * 100) is None
    assert pilot.pick(results[:1]) is None
    md = pilot.report(results, 0.7, 35 * 60)
    assert "**Picked: `n1k9_500`**" in md and "n_inputs_choices=1, n_examples_choices=9" in md
    rows = parse_markdown_table(md, "candidate")
    assert [r["est. sweep min"] for r in rows] == ["10.0", "27.5", "17.5", "52.5"]
    assert "No candidate reached 0.9" in pilot.report(results[:1], 0.9, 35 * 60)


def test_r2_cpu_spec_is_the_pilots_pick(tmp_path, monkeypatch):
    """The recorded CPU sweep trains what the pilot measured (R2_pilot.md): its pick's generator
    settings for every alpha and its steps."""
    pilot = _pilot()
    monkeypatch.chdir(ROOT)
    spec = reproduce.resolve_sweep(reproduce.SWEEPS_DIR / "r2_cpu.yaml", tmp_path, {})
    _, generator, recipe = pilot.CANDIDATES["n1k9_500"]
    picked = pilot.BASE_GENERATOR | generator
    for point in grid_points(spec["grid"]):
        config = reproduce.generator_config(spec, point)
        for key, value in picked.items():
            if key != "base":
                assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), key
        assert reproduce.drop_levels(max(config.n_examples_choices) - 1) == [0, 2, 4, 6, 8]
    assert load_recipe_yaml(ROOT / spec["recipe"])["max_steps"] == recipe["max_steps"]


@pytest.mark.parametrize("name", ["R1", "R2"])
def test_gpu_specs_resolve_to_the_paper_configs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = reproduce.resolve_sweep(
        reproduce.SWEEPS_DIR / reproduce.SWEEP_FILES[name]["gpu"]["main"], tmp_path, {}
    )
    configs = [reproduce.generator_config(spec, point) for point in grid_points(spec["grid"])]
    assert {c.vocab_size for c in configs} == {1024} and {c.n_examples_choices for c in configs} == {(40,)}
    assert reproduce.drop_levels(max(configs[0].n_examples_choices) - 1) == [0, 10, 20, 30, 39]
    if name == "R1":
        assert {c.prompt_strategy for c in configs} == {"standard", "cot"}
    else:
        assert sorted(c.cot_schedule.alpha for c in configs[::3]) == [0.0, 0.5, 1.0, 2.0, math.inf]


def test_cli_has_the_reproduce_subcommand(capsys):
    from hf_cot_distill.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--help"])
    assert exit_info.value.code == 0
    assert "R1 CoT-ICL Lab" in capsys.readouterr().out


def test_reproduce_refuses_unrecorded_model_folders(tmp_path, capsys):
    """A model folder the sweep cannot check (no sweep_point.json) is neither resumed nor retrained."""
    from hf_cot_distill.cli import main

    point = "dataset_name=generator_recipes_reproductions_generators_r1_standard.yaml__seed=0"
    old = tmp_path / "R1_smoke" / "r1_cpu" / point
    old.mkdir(parents=True)
    (old / "train_metrics.json").write_text("{}")
    argv = ["reproduce", "R1", "--smoke", "--seeds", "0", "--threads", "0", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"output_root {old.parent}: is not empty ({point}/) and not written by hf-cot-distill" in err
    assert "pass another --out" in err
    assert (old / "train_metrics.json").read_text() == "{}" and len(list(old.parent.iterdir())) == 1
