"""The whole pipeline on real text: CHAMP traces -> real Qwen2.5 tokenizer -> sections ->
lead-span truncation -> collator -> SectionKDTrainer, a few steps, CoT-only KD.

Tiny Qwen2 student (hidden 32, 1 layer) and teacher (hidden 48, 2 layers) whose embedding
matrices have Qwen2.5's 151,936 rows (271 padding rows over the 151,665-token tokenizer), both
tokenizers given so the compatibility check runs. Once through the API, once through
``hf-cot-distill train`` with a local parquet dataset folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from hf_cot_distill.core.sections import Section, section_counts
from hf_cot_distill.data.traces import champ
from hf_cot_distill.data.traces.encoding import ReasoningTraceEncoder, encode_dataset
from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer
from tests.qwen_tokenizers import QWEN25_EMBEDDING_ROWS, QWEN25_VOCAB_SIZE, load_qwen25_tokenizer
from tests.tiny_models import tiny_qwen2

pytest.importorskip("champ_dataset", reason="dev extra `champ-dataset` not installed")

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 1024
N_ROWS, BATCH, STEPS = 6, 2, 3  # one epoch: every row is trained on exactly once
LEAD_SPAN = 0.5


def sample_traces() -> list[champ.ChampTrace]:
    """Three human solutions and three model conversations (short and long CoTs)."""
    solutions = champ.champ_traces(sources=("solution",))[:3]
    models = champ.champ_traces(sources=("model",), models=("GPT-4",))[:3]
    return solutions + models


@pytest.fixture(scope="module")
def traces() -> list[champ.ChampTrace]:
    return sample_traces()


@pytest.fixture(scope="module")
def encoded(qwen25_tokenizer, traces):
    rows = Dataset.from_list([champ.to_format(t, "messages") for t in traces])
    encoder = ReasoningTraceEncoder(qwen25_tokenizer, max_length=MAX_LENGTH, on_invalid="drop")
    # new_fingerprint: skip hashing the 151k-token tokenizer for the datasets cache
    return encode_dataset(rows, encoder, new_fingerprint="real-text-training")


def student_teacher() -> tuple[torch.nn.Module, torch.nn.Module]:
    common = dict(vocab_size=QWEN25_EMBEDDING_ROWS, max_position_embeddings=MAX_LENGTH)
    student = tiny_qwen2(seed=0, hidden_size=32, num_hidden_layers=1, **common)
    teacher = tiny_qwen2(seed=1, hidden_size=48, num_hidden_layers=2, **common)
    for model in (student, teacher):  # the tokenizer's special ids, as a real Qwen2.5 config has
        model.config.pad_token_id, model.config.eos_token_id = 151643, 151645
    return student, teacher


def test_encoded_sample_is_real_and_fits(encoded):
    data, stats = encoded
    assert stats.counts["dropped"] == 0 and len(data) == N_ROWS
    lengths = [len(ids) for ids in data["input_ids"]]
    assert max(lengths) <= MAX_LENGTH and min(lengths) > 100
    for ids, secs in zip(data["input_ids"], data["section_ids"]):
        counts = section_counts(secs)
        assert counts[Section.PROMPT] and counts[Section.COT] and counts[Section.ANSWER]
        assert max(ids) < QWEN25_VOCAB_SIZE


def test_section_kd_trainer_on_real_text(tmp_path, encoded, qwen25_tokenizer):
    data, _ = encoded
    student, teacher = student_teacher()
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    teacher_before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    args = SectionKDConfig(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", use_cpu=True,
        per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=1e-3, weight_decay=0.0,
        logging_steps=1, seed=0, disable_tqdm=True, dataloader_num_workers=0,
        supervision_preset="cot", truncation_policy="lead_span_proportion",
        truncation_kwargs={"lead_span_proportion": LEAD_SPAN},
    )  # fmt: skip
    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=data.remove_columns("trace_flags"),
        processing_class=qwen25_tokenizer, teacher_processing_class=load_qwen25_tokenizer(),
    )  # fmt: skip
    # the compatibility check ran on two separate tokenizer objects: padded rows are not real
    assert trainer.vocab_size == QWEN25_VOCAB_SIZE
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == STEPS
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in logs)

    # every student parameter moved; the teacher is frozen
    moved = [n for n, p in student.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved == list(before)
    assert all(torch.equal(p.detach(), teacher_before[n]) for n, p in teacher.named_parameters())
    # padded vocabulary rows (and unused real rows) got no gradient, in the lm_head and embeddings
    for weight, name in ((student.lm_head.weight, "lm_head.weight"),
                         (student.model.embed_tokens.weight, "model.embed_tokens.weight")):  # fmt: skip
        assert torch.equal(weight.detach()[QWEN25_VOCAB_SIZE:], before[name][QWEN25_VOCAB_SIZE:]), name
    head_rows_moved = (student.lm_head.weight.detach() != before["lm_head.weight"]).any(dim=1)
    assert head_rows_moved[:QWEN25_VOCAB_SIZE].all()  # KD touches every real column

    # KD (and CE) only on COT tokens
    acc = trainer.compute_accounting
    assert acc.kd_tokens[Section.COT] > 0 and acc.ce_tokens[Section.COT] > 0
    for section in (Section.PAD, Section.PROMPT, Section.ANSWER):
        assert acc.kd_tokens[section] == 0 and acc.ce_tokens[section] == 0
    for h in logs:
        assert h["tokens_kd/cot"] > 0 and h["tokens_kd/prompt"] == h["tokens_kd/answer"] == 0

    # truncation accounting: exactly the tail half of each of the six rows (one epoch)
    expected_cut = np.zeros(4, dtype=np.int64)
    expected_cot_kept = 0
    for secs in data["section_ids"]:
        keep = len(secs) // 2  # floor(L * 0.5)
        expected_cut += section_counts(secs[keep:])
        expected_cot_kept += int(section_counts(secs[:keep])[Section.COT])
    truncation = trainer.truncation_accounting
    assert truncation.samples == truncation.samples_truncated == N_ROWS
    assert truncation.tokens_removed.tolist() == expected_cut.tolist()
    assert expected_cut[Section.ANSWER] > 0  # every answer sits in the cut half
    assert truncation.supervised_kept == expected_cot_kept
    final = logs[-1]
    for section in (Section.PROMPT, Section.COT, Section.ANSWER):
        name = section.name.lower()
        assert final[f"truncation/tokens_cut/{name}"] == expected_cut[section]
    # KD positions (shifted: position i predicts token i + 1) = the kept COT tokens: no row starts in COT
    assert int(acc.kd_tokens[Section.COT]) == expected_cot_kept
    assert "lead_span_proportion" in str(trainer.model_card_fields["truncation_policy"])


def test_incompatible_teacher_tokenizer_is_refused(tmp_path, qwen25_tokenizer, qwen3_tokenizer):
    student, teacher = student_teacher()
    args = SectionKDConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, supervision_preset="cot")
    with pytest.raises(ValueError, match=r"not compatible(.|\n)*4 extra tokens(.|\n)*chat_template"):
        SectionKDTrainer(
            student,
            teacher,
            args=args,
            processing_class=qwen25_tokenizer,
            teacher_processing_class=qwen3_tokenizer,
        )


def test_cli_train_on_champ_messages_folder(tmp_path, traces):
    from hf_cot_distill.cli import main

    tokenizer = load_qwen25_tokenizer()
    folders = {}
    for name, model in zip(("student", "teacher"), student_teacher()):
        folders[name] = tmp_path / name
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    data_dir = tmp_path / "champ_messages"
    rows = [{"messages": champ.to_format(t, "messages")["messages"]} for t in traces]
    Dataset.from_list(rows).to_parquet(str(data_dir / "train.parquet"))
    out = tmp_path / "run"
    code = main(
        ["train", "--config", str(ROOT / "recipes/tiny/kd_messages.yaml"),
         "--model_name_or_path", str(folders["student"]), "--teacher_model_name_or_path", str(folders["teacher"]),
         "--dataset_name", str(data_dir), "--output_dir", str(out), "--max_length", str(MAX_LENGTH),
         "--per_device_train_batch_size", str(BATCH), "--max_steps", "2"]
    )  # fmt: skip
    assert code == 0
    before = load_file(str(folders["student"] / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert [k for k in before if not torch.equal(before[k], after[k])] == list(before)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    # every trace fits max_length and is well formed: none dropped, and the run says so
    assert metrics["data_rows"] == {
        "train": {"rows": N_ROWS, "dropped": 0, "dropped_by_reason": {}, "used": N_ROWS}
    }
    history = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert all(h["tokens_kd/prompt"] == h["tokens_kd/answer"] == 0 < h["tokens_kd/cot"] for h in history)
    assert all(h["truncation/tokens_cut/answer"] > 0 for h in history)  # lead span 0.5 cuts answers
    assert (out / "tokenizer.json").is_file() and "lead_span_proportion" in (out / "README.md").read_text()
