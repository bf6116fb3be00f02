"""``hf-cot-distill eval-math``: the packaged AIME 2025 spec run end to end on a local model folder
and a local copy of the problems, offline, with the report written by ``eval``'s output rule.

The model is a tiny Qwen2 wired as a bigram table (every layer's output projection is zero, so the
last hidden state is the current token's embedding, a distinct basis vector for the few tokens of a
chain): whatever the problem, after the generation prompt it writes ``\\boxed{2}<|im_end|>``. Asked
"1+1" (answer 2) and "2+2" (answer 4), it scores exactly 0.5: the generation, extraction and
math-verify scoring are all real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_cot_distill.cli import main
from tests.qwen_tokenizers import load_qwen25_tokenizer
from tests.tiny_models import tiny_qwen2

pytest.importorskip("math_verify", reason="the `math` extra (math-verify) is not installed")

IM_END, PAD = 151645, 151643
HIDDEN = 32


def bigram_model(tokenizer, chain: list[int]):
    """A Qwen2 whose greedy (or T=0.6 sampled: the margin is 80 logits) continuation of
    ``chain[0]`` is ``chain[1:]``."""
    model = tiny_qwen2(seed=0, vocab_size=151936, hidden_size=HIDDEN)
    model.config.pad_token_id, model.config.eos_token_id, model.config.bos_token_id = PAD, IM_END, None
    assert len(set(chain[:-1])) == len(chain) - 1 <= HIDDEN
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (token, following) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[token, k] = 1.0
            model.lm_head.weight[following, k] = 10.0  # logit 10 * sqrt(HIDDEN) after the RMSNorm
    return model


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from datasets import Dataset

    root = tmp_path_factory.mktemp("eval_math")
    tokenizer = load_qwen25_tokenizer()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    prompt_end = tokenizer.encode(prompt, add_special_tokens=False)
    answer = tokenizer.encode("\\boxed{2}", add_special_tokens=False)
    model = bigram_model(tokenizer, [prompt_end[-1], *answer, IM_END])
    folders = {"model": root / "student", "data": root / "aime_local.parquet"}
    model.save_pretrained(folders["model"])
    tokenizer.save_pretrained(folders["model"])
    Dataset.from_list(
        [
            {"problem": "What is $1+1$?", "answer": "2", "id": 0},
            {"problem": "What is $2+2$?", "answer": "4", "id": 1},
        ]
    ).to_parquet(str(folders["data"]))
    return folders


def run(local, *extra: str) -> int:
    return main(
        ["eval-math", "--config", "aime25_boxed", "--model", str(local["model"]), "--dataset", str(local["data"]),
         "--max-new-tokens", "8", "--device", "cpu", *extra]
    )  # fmt: skip


def test_eval_math_runs_the_aime_spec_on_a_local_model(local, capsys):
    assert run(local) == 0
    out = capsys.readouterr().out
    report_path = local["model"].parent / "student.aime25_boxed.eval.json"  # beside, never inside
    assert f"Wrote {report_path} and {report_path.with_suffix('.md')}" in out
    report = json.loads(report_path.read_text())
    assert report["config"] == "aime25_boxed" and report["num_tasks"] == 2 and report["split"] == "train"
    assert report["dataset"] == str(local["data"]) and report["answers"] == ["2", "4"]
    assert report["completions"] == [["\\boxed{2}"], ["\\boxed{2}"]]  # cut at <|im_end|>
    (scores,) = report["results"]
    assert scores["math_equivalent"] == 0.5 and scores["extracted"] == 1.0 and scores["count"] == 2
    # the spec's sampling settings, with the command line's max_new_tokens
    assert (report["spec"]["temperature"], report["spec"]["top_p"], report["spec"]["max_new_tokens"]) == (
        0.6, 0.95, 8
    )  # fmt: skip
    md = report_path.with_suffix(".md").read_text()
    assert md.startswith("<!-- hf-cot-distill eval -->") and "| math_equivalent |" in md.replace("  ", " ")
    assert not any(p.name.endswith(".json") and "eval" in p.name for p in local["model"].iterdir())


def test_eval_math_output_rule_and_overrides(local, tmp_path, capsys):
    out = tmp_path / "reports" / "aime.json"
    assert run(local, "--out", str(out), "--num-samples", "2", "--limit", "1") == 0
    report = json.loads(out.read_text())
    assert report["num_tasks"] == 1 and report["completions"] == [["\\boxed{2}", "\\boxed{2}"]]
    assert report["results"][0]["num_samples"] == 2 and report["results"][0]["math_equivalent"] == 1.0
    assert run(local, "--out", str(out)) == 0  # a report of ours: replaced
    capsys.readouterr()
    foreign = tmp_path / "notes.json"
    foreign.write_text("{}")
    assert run(local, "--out", str(foreign)) == 2
    assert (
        "was not written by `hf-cot-distill eval`" in capsys.readouterr().err and foreign.read_text() == "{}"
    )
    assert run(local, "--out", str(foreign), "--overwrite") == 0
    assert run(local, "--out", str(local["model"] / "r.json")) == 2
    assert "lies inside the input --model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--config", "aime24_boxed", r"no packaged math-eval spec of that name; fix: .*aime25_boxed"),
        ("--dataset", "/nonexistent/aime", r"--dataset '/nonexistent/aime': not a local file or folder"),
        ("--model", "/nonexistent/model", r"model: '/nonexistent/model' does not exist"),
    ],
)
def test_eval_math_refuses_bad_input_with_one_error_line(local, tmp_path, capsys, flag, value, message):
    import re

    out = tmp_path / "r.json"
    given = {"--config": "aime25_boxed", "--model": str(local["model"]), "--dataset": str(local["data"])}
    given[flag] = value
    assert main(["eval-math", *(a for kv in given.items() for a in kv), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err
    assert not out.exists()
    with pytest.raises(SystemExit) as stop:
        main(["eval-math", *(a for kv in given.items() for a in kv), "--num-samples", "0"])
    assert stop.value.code == 2 and "must be an int >= 1" in capsys.readouterr().err


def test_a_dataset_without_the_spec_columns_is_refused(local, tmp_path, capsys):
    from datasets import Dataset

    data = tmp_path / "other.jsonl"
    Dataset.from_list([{"question": "q", "solution": "1"}]).to_json(str(data))
    out = tmp_path / "r.json"
    assert main(["eval-math", "--config", "aime25_boxed", "--model", str(local["model"]), "--dataset", str(data),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "no column 'problem'" in capsys.readouterr().err and not out.exists()


def test_the_packaged_spec_resolves_by_short_and_full_name(tmp_path, monkeypatch):
    from hf_cot_distill.pipelines.evaluate import resolve_math_eval_spec

    monkeypatch.chdir(tmp_path)  # outside the repository: only the packaged specs answer
    short, full = resolve_math_eval_spec("aime25_boxed"), resolve_math_eval_spec("eval/aime25_boxed")
    assert short == full and short[0] == "aime25_boxed" and short[1].name == "aime25_boxed.yaml"
    mine = Path("mine.yaml")
    mine.write_text(short[1].read_text())
    assert resolve_math_eval_spec("mine.yaml") == ("mine", mine)  # a path wins
