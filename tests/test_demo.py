"""The reduced demo end to end: report numbers parsed back and sanity-checked."""

from __future__ import annotations

import json

import pytest
import yaml

from hf_cot_distill.core.tables import parse_markdown_table
from hf_cot_distill.experiments.demo import VARIANTS, run_demo
from hf_cot_distill.experiments.demo_report import TABLE_COLUMNS

NAMES = [v.name for v in VARIANTS]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out, size="small", progress=False)
    return out, report


def _front_matter(path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n"), f"{path} has no YAML metadata block"
    return yaml.safe_load(text.split("---\n")[1])


def test_report_table_matches_json(demo):
    out, report = demo
    assert report == out / "REPORT.md"
    data = json.loads((out / "report.json").read_text())
    rows = parse_markdown_table(report.read_text(), TABLE_COLUMNS[0])
    assert all(list(r) == list(TABLE_COLUMNS) for r in rows)
    assert [r["variant"] for r in rows] == NAMES == [v["variant"] for v in data["variants"]]
    for row, rec in zip(rows, data["variants"]):
        assert float(row["answer_accuracy"]) == pytest.approx(rec["answer_accuracy"], abs=6e-4)
        assert float(row["cot_token_accuracy"]) == pytest.approx(rec["cot_token_accuracy"], abs=6e-4)
        assert int(row["tokens_forwarded"].replace(",", "")) == rec["tokens_forwarded"]
        assert float(row["flops_counted"]) == pytest.approx(rec["flops_counted"], rel=1e-3)
        assert float(row["wall_time_s"]) == pytest.approx(rec["wall_time_s"], abs=0.06)
        kd = [int(x.replace(",", "")) for x in row["kd_tokens_p/c/a"].split("/")]
        assert kd == [rec["tokens_kd"][s] for s in ("prompt", "cot", "answer")]


def test_report_numbers_are_sane(demo):
    out, _ = demo
    data = json.loads((out / "report.json").read_text())
    by = {v["variant"]: v for v in data["variants"]}
    for rec in by.values():
        for key in (
            "answer_accuracy",
            "chain_accuracy",
            "cot_token_accuracy",
            "answer_accuracy_no_context_cot",
        ):
            assert 0.0 <= rec[key] <= 1.0
        assert set(rec["baselines"]) == {"uniform", "marginal_majority", "in_context_majority"}
        assert all(0.0 <= b <= 1.0 for b in rec["baselines"].values())
        assert rec["baselines"]["uniform"] == pytest.approx(1 / data["generator"]["n_usable"])
        assert rec["flops_counted"] > 0 and rec["peak_memory_mb"] > 0 and rec["wall_time_s"] > 0
    full, cot, teacher = by["student_full_kd"], by["student_cot_lsp0.5"], by["teacher"]
    # lead-span 0.5 keeps floor(L/2) of each 73-token sequence: 36/73 of the tokens
    assert cot["tokens_forwarded"] / full["tokens_forwarded"] == pytest.approx(0.5, abs=0.02)
    assert cot["tokens_kd"]["cot"] > 0 and cot["tokens_kd"]["prompt"] == cot["tokens_kd"]["answer"] == 0
    assert all(full["tokens_kd"][s] > 0 for s in ("prompt", "cot", "answer"))
    assert sum(teacher["tokens_kd"].values()) == 0 and teacher["flops_teacher"] == 0
    assert cot["flops_counted"] < full["flops_counted"]
    assert data["findings"] and "smoke run" in data["findings"][0]


def test_plot_and_cards(demo):
    out, report = demo
    png = out / "quality_vs_compute.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    text = report.read_text()
    assert "](quality_vs_compute.png)" in text and text.rstrip().endswith(".")
    for name in NAMES:
        meta = _front_matter(out / name / "README.md")
        assert f"({name}/README.md)" in text
        assert "hf-cot-distill" in meta["tags"]
        assert (out / name / "model.safetensors").is_file()
    assert _front_matter(out / "student_full_kd" / "README.md")["hf_cot_distill"]["teacher"]
    dataset_meta = _front_matter(out / "dataset" / "README.md")
    assert dataset_meta["configs"][0]["config_name"] == "demo_cot_icl"
    assert "(dataset/README.md)" in text
