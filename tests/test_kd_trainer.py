"""SectionKDTrainer on tiny local Qwen2 models: training, exact metrics, LoRA, GA, packing, errors, modes."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_cot_distill.core.sections import SECTION_NAMES, Section
from hf_cot_distill.supervision.collators import SectionCollator
from hf_cot_distill.trainers import SectionKDConfig, SectionKDTrainer
from tests.tiny_models import tiny_qwen2

VOCAB = 128


def make_rows(n: int, seed: int = 0, lengths: tuple[int, ...] = (14, 20, 9, 17)) -> list[dict[str, Any]]:
    """Rows of PROMPT / COT / ANSWER tokens with varying lengths (ids avoid 0-2: pad/bos/eos)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        p, a = max(2, length // 4), 2
        sections = (
            [int(Section.PROMPT)] * p + [int(Section.COT)] * (length - p - a) + [int(Section.ANSWER)] * a
        )
        rows.append({"input_ids": rng.integers(3, VOCAB, length).tolist(), "section_ids": sections})
    return rows


def make_args(tmp_path: Any, **kwargs: Any) -> SectionKDConfig:
    base = dict(
        output_dir=str(tmp_path),
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
    )
    base.update(kwargs)
    return SectionKDConfig(**base)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def student_teacher(**kwargs: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    return tiny_qwen2(seed=0, **kwargs), tiny_qwen2(seed=1, hidden_size=64, **kwargs)


def test_trains_three_steps_and_logs_sections(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    before_s, before_t = params(student), params(teacher)
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path, supervision_preset="prompt+cot+answer"),
        train_dataset=Dataset.from_list(make_rows(8)),
    )  # fmt: skip
    trainer.train()
    for name, p in student.named_parameters():
        assert p.requires_grad
        assert not torch.equal(p.detach(), before_s[name]), f"{name} did not move"
    for name, p in teacher.named_parameters():
        assert torch.equal(p.detach(), before_t[name]), f"teacher {name} changed"
    assert not teacher.training
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for key in (
        "kd/prompt",
        "kd/cot",
        "kd/answer",
        "ce/cot",
        "tokens_kd/cot",
        "flops_counted",
        "peak_memory_mb",
    ):
        assert key in logs[-1], key
    assert logs[-1]["truncation/tokens_cut/cot"] == 0
    assert trainer.model_card_fields["tokens_kd"]["cot"] == logs[-1]["tokens_kd/cot"] > 0
    assert trainer.model_card_fields["flops_counted"] > 0


def naive_reference(student, teacher, batch, vocab: int) -> dict[str, float]:
    """Full-logits float64 reference: CE and forward KL per position, shifted, per section."""
    with torch.no_grad():
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ls = student(**kw).logits[:, :-1, :vocab].double()
        lt = teacher(**kw).logits[:, :-1, :vocab].double()
    labels, secs = batch["labels"][:, 1:], batch["section_ids"][:, 1:]
    ce_w, kd_w = batch["ce_weights"][:, 1:].double(), batch["kd_weights"][:, 1:].double()
    lq, lp = F.log_softmax(ls, -1), F.log_softmax(lt, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    ce = -lq.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    out = {"loss": float((ce_w * ce).sum() / (ce_w > 0).sum() + (kd_w * kl).sum() / (kd_w > 0).sum())}
    for s in (Section.PROMPT, Section.COT, Section.ANSWER):
        name = SECTION_NAMES[int(s)]
        for kind, values, w in (("kd", kl, kd_w), ("ce", ce, ce_w)):
            sel = (secs == int(s)) & (w > 0)
            if sel.any():
                out[f"{kind}/{name}"] = float(values[sel].mean())
    return out


def test_loss_and_section_metrics_match_naive_full_logits(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    args = make_args(tmp_path, supervision_preset="prompt+cot+answer", ce_sections="cot+answer")
    trainer = SectionKDTrainer(student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(4)))
    batch = trainer.data_collator(make_rows(3))
    batch.pop("truncation_accounting")
    ref = naive_reference(student, teacher, batch, VOCAB)
    student.train()
    loss = trainer.compute_loss(student, batch)
    torch.testing.assert_close(float(loss), ref["loss"], rtol=1e-5, atol=1e-6)
    means = trainer._stats["train"].means()
    assert set(means) == {k for k in ref if k != "loss"}  # no CE on the prompt
    for key, value in means.items():
        torch.testing.assert_close(value, ref[key], rtol=1e-5, atol=1e-6, msg=key)


def test_lora_student_only_lora_params_move(tmp_path: Any) -> None:
    from peft import LoraConfig

    student, teacher = student_teacher()
    before = params(student)
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path, max_steps=2),
        train_dataset=Dataset.from_list(make_rows(8)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )  # fmt: skip
    lora_before = params(trainer.model)
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), lora_before[n])}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert moved == {n for n in trainable if "lora_B" in n or "lora_A" in n} and moved
    for name, p in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p.detach(), before[key]), name


def one_sgd_step(tmp_path: Any, batch_size: int, accumulation: int, **kwargs: Any) -> dict[str, torch.Tensor]:
    student, teacher = student_teacher()
    args = make_args(
        tmp_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, max_steps=1,
        optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant", **kwargs,
    )  # fmt: skip
    trainer = SectionKDTrainer(student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(4)))
    trainer.train()
    return params(student)


def test_gradient_accumulation_1x4_equals_4x1(tmp_path: Any) -> None:
    start = params(tiny_qwen2(seed=0))
    a = one_sgd_step(tmp_path, 4, 1)
    b = one_sgd_step(tmp_path, 1, 4)
    for name in a:
        assert not torch.equal(a[name], start[name])
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=2e-6, msg=name)


def test_packed_and_padded_batches_give_the_same_loss(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    trainer = SectionKDTrainer(
        student, teacher, args=make_args(tmp_path), train_dataset=Dataset.from_list(make_rows(4))
    )
    rows = make_rows(3, seed=3)
    losses = []
    for packed in (False, True):
        collate = SectionCollator(supervision=trainer.supervision, padding_free=packed)
        batch = collate(rows)
        assert ("position_ids" in batch) == packed and ("attention_mask" in batch) != packed
        losses.append(float(trainer.compute_loss(student, batch)))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_no_teacher_is_section_weighted_ce(tmp_path: Any) -> None:
    student = tiny_qwen2(seed=0)
    args = make_args(tmp_path, ce_weight=1.0, max_steps=1)
    trainer = SectionKDTrainer(student, args=args, train_dataset=Dataset.from_list(make_rows(4)))
    assert not trainer.kd_enabled
    batch = trainer.data_collator(make_rows(2))
    batch.pop("truncation_accounting")
    with torch.no_grad():
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1))
    torch.testing.assert_close(float(trainer.compute_loss(student, batch)), float(ref), rtol=1e-5, atol=1e-6)
    trainer.train()
    assert trainer.state.log_history[0]["tokens_kd/cot"] == 0


def test_padded_vocab_rows_and_tied_embeddings(tmp_path: Any) -> None:
    class Tok:  # the only tokenizer facts the trainer needs
        pad_token_id = 0

        def __len__(self) -> int:
            return 151_665

    student = tiny_qwen2(seed=0, vocab_size=151_936, tie_word_embeddings=True)
    teacher = tiny_qwen2(seed=1, vocab_size=151_936, hidden_size=64)
    head_before = student.lm_head.weight.detach().clone()
    args = make_args(tmp_path, max_steps=1, optim="sgd", learning_rate=1.0, weight_decay=0.0, chunk_size=16)
    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(2)), processing_class=Tok()
    )
    assert trainer.vocab_size == 151_665
    trainer.train()
    head = student.lm_head.weight.detach()
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert torch.equal(head[151_665:], head_before[151_665:])  # padded rows: no gradient
    assert not torch.equal(head[:151_665], head_before[:151_665])


# ---- bad inputs --------------------------------------------------------------------------


def test_vocab_mismatch_is_caught_at_init(tmp_path: Any) -> None:
    student, teacher = tiny_qwen2(seed=0), tiny_qwen2(seed=1, vocab_size=96)
    with pytest.raises(ValueError, match="teacher_model: lm_head has 96 rows but the student's has 128"):
        SectionKDTrainer(student, teacher, args=make_args(tmp_path))


def test_tokenizer_larger_than_lm_head_is_caught(tmp_path: Any) -> None:
    class Tok:
        pad_token_id = 0

        def __len__(self) -> int:
            return 200

    with pytest.raises(ValueError, match="processing_class: tokenizer has 200 tokens"):
        SectionKDTrainer(*student_teacher(), args=make_args(tmp_path), processing_class=Tok())


def test_policy_selecting_nothing(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="selects no token anywhere"):
        SectionKDTrainer(tiny_qwen2(), args=make_args(tmp_path, ce_weight=0.0, kd_weight=1.0))
    student, teacher = student_teacher()
    trainer = SectionKDTrainer(student, teacher, args=make_args(tmp_path, supervision_preset="answer"))
    rows = [
        {"input_ids": r["input_ids"], "section_ids": [min(s, 2) for s in r["section_ids"]]}
        for r in make_rows(2)
    ]
    batch = trainer.data_collator(rows)
    with pytest.raises(ValueError, match="no position carries a KD or CE weight"):
        trainer.compute_loss(student, batch)


def test_batch_without_weights_is_refused(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    trainer = SectionKDTrainer(student, teacher, args=make_args(tmp_path))
    with pytest.raises(ValueError, match="missing"):
        trainer.compute_loss(student, {"input_ids": torch.ones(1, 4, dtype=torch.long)})


def test_generation_modes_need_a_teacher(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="kd_mode: 'on_policy' needs a teacher"):
        SectionKDTrainer(tiny_qwen2(), args=make_args(tmp_path, kd_mode="on_policy"))


# ---- on_policy / sequence_level ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["on_policy", "sequence_level"])
def test_generation_modes_train_on_generated_positions(tmp_path: Any, mode: str) -> None:
    student, teacher = student_teacher()
    args = make_args(
        tmp_path,
        kd_mode=mode,
        max_new_tokens=5,
        max_steps=1,
        supervision_preset="cot",
        generated_section="cot",
    )
    trainer = SectionKDTrainer(student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(2)))
    rows = make_rows(2, seed=5)
    batch = trainer.data_collator(rows)
    prompt_lens = [int(np.sum(np.asarray(r["section_ids"]) == Section.PROMPT)) for r in rows]
    (gen,), counts = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    real = gen["attention_mask"].sum(1)
    n_generated = [int(real[b]) - prompt_lens[b] for b in range(2)]
    assert all(1 <= n <= 5 for n in n_generated)
    for b, p in enumerate(prompt_lens):  # KD exactly on the generated tokens; the prompt untouched
        kd = gen["kd_weights"][b]
        assert torch.all(kd[:p] == 0) and torch.all(kd[p : p + n_generated[b]] == 0.5)
        assert torch.equal(gen["input_ids"][b, :p], batch["input_ids"][b, :p])
        assert torch.all(gen["section_ids"][b, p : p + n_generated[b]] == Section.COT)
    n_ce = 0 if mode == "on_policy" else sum(n_generated)
    assert counts.tolist() == [float(sum(n_generated)), float(n_ce)]
    before = params(student)
    trainer.train()
    assert np.isfinite(trainer.state.log_history[0]["loss"])
    assert any(not torch.equal(p.detach(), before[n]) for n, p in student.named_parameters())
    assert trainer.state.log_history[0]["tokens_kd/cot"] >= 1
    assert trainer.state.log_history[0]["tokens_kd/prompt"] == 0


def test_teacher_is_a_deep_copy_safe_frozen_module(tmp_path: Any) -> None:
    student = tiny_qwen2(seed=0)
    teacher = copy.deepcopy(student)
    trainer = SectionKDTrainer(student, teacher, args=make_args(tmp_path))
    assert all(not p.requires_grad for p in trainer.teacher_model.parameters())
    batch = trainer.data_collator(make_rows(2))
    batch.pop("truncation_accounting")
    student.train()
    trainer.compute_loss(student, batch)
    kd = trainer._stats["train"].means()
    assert all(abs(v) < 1e-6 for k, v in kd.items() if k.startswith("kd/"))  # identical models: KL = 0


def test_compared_vocabulary_is_the_tokenizers_not_the_padded_rows(
    tmp_path: Any, qwen25_tokenizer: Any
) -> None:
    """Qwen2.5 pads its embedding to 151,936 rows for 151,665 tokens: KD compares only the real ones.

    (The refusal of an incompatible teacher tokenizer is asserted in full in test_real_text_training.py.)
    """
    student = tiny_qwen2(seed=0, vocab_size=151_936, hidden_size=16)
    teacher = tiny_qwen2(seed=1, vocab_size=151_936, hidden_size=16)
    trainer = SectionKDTrainer(
        student,
        teacher,
        args=make_args(tmp_path),
        processing_class=qwen25_tokenizer,
        teacher_processing_class=qwen25_tokenizer,
    )
    assert trainer.vocab_size == len(qwen25_tokenizer) == 151_665


def test_cot_icl_meta_training_with_eval_hook(tmp_path: Any) -> None:
    from hf_cot_distill.data import CoTICLConfig, generate_batch
    from hf_cot_distill.trainers.cot_icl import CoTICLTrainer, cot_icl_model, cot_icl_training_args

    cfg = CoTICLConfig(
        vocab_size=64, n_examples_choices=(4,), prompt_strategy="hybrid_special_token", cot_example_prob=0.5,
        num_tasks=8, num_eval_tasks=4,
    )  # fmt: skip
    rows = generate_batch(cfg, range(8)).rows()
    eval_rows = generate_batch(cfg, range(4), "eval").rows()
    model = cot_icl_model(cfg, architecture="llama", num_layers=2, hidden_size=32, num_attention_heads=4)
    args = cot_icl_training_args(
        str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="no",
        use_cpu=True, logging_steps=1,
    )  # fmt: skip
    trainer = CoTICLTrainer(
        model, args, cfg, train_dataset=Dataset.from_list(rows), eval_rows=eval_rows, eval_every_steps=2
    )
    assert trainer.pad_token_id == cfg.special_tokens.pad and not trainer.kd_enabled
    trainer.train()
    history = trainer.cot_icl_callback.history
    assert [h["step"] for h in history] == [2]
    assert 0.0 <= history[-1]["cot_icl/answer_accuracy@drop0"] <= 1.0
    # (the callback logs inside on_step_end, which clears should_log for that step's train log)
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert train_logs[-1]["tokens_ce/cot"] > 0 and "ce/answer" in train_logs[-1]
    assert any("cot_icl/answer_accuracy@drop0" in h for h in trainer.state.log_history)


def test_per_section_kd_temperatures_match_naive(tmp_path: Any) -> None:
    """section_kd_temperatures: COT at T=2, ANSWER at the default T=1.5, checked against full logits."""
    student, teacher = student_teacher()
    args = make_args(
        tmp_path, supervision_preset="cot+answer", temperature=1.5, section_kd_temperatures={"cot": 2.0}
    )
    trainer = SectionKDTrainer(student, teacher, args=args, train_dataset=Dataset.from_list(make_rows(4)))
    batch = trainer.data_collator(make_rows(3))
    batch.pop("truncation_accounting")
    temps = batch["kd_temperatures"][:, 1:].double()
    assert set(temps[batch["kd_weights"][:, 1:] > 0].unique().tolist()) == {1.5, 2.0}
    with torch.no_grad():
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ls = student(**kw).logits[:, :-1, :VOCAB].double()
        lt = teacher(**kw).logits[:, :-1, :VOCAB].double()
    labels = batch["labels"][:, 1:]
    ce_w, kd_w = batch["ce_weights"][:, 1:].double(), batch["kd_weights"][:, 1:].double()
    lq, lp = F.log_softmax(ls / temps[..., None], -1), F.log_softmax(lt / temps[..., None], -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    ce = -F.log_softmax(ls, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ref = float((ce_w * ce).sum() / (ce_w > 0).sum() + (kd_w * kl).sum() / (kd_w > 0).sum())
    student.train()
    loss = trainer.compute_loss(student, batch)
    torch.testing.assert_close(float(loss.detach()), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="section_kd_temperatures"):
        make_args(tmp_path, section_kd_temperatures={"thoughts": 2.0})


# ---- on_empty_window: an accumulation window with nothing to supervise ------------------------


def answer_rows(pattern: str) -> list[dict[str, Any]]:
    """One row per character: 'a' keeps its ANSWER, '-' has none (its answer tokens become COT)."""
    rows = make_rows(len(pattern))
    for row, kind in zip(rows, pattern):
        if kind == "-":
            row["section_ids"] = [min(s, int(Section.COT)) for s in row["section_ids"]]
    return rows


def test_empty_window_is_an_error_by_default(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    args = make_args(tmp_path, supervision_preset="answer", per_device_train_batch_size=1, max_steps=4)
    assert args.on_empty_window == "error"
    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=Dataset.from_list(answer_rows("a-a-"))
    )
    with pytest.raises(ValueError, match="no position carries a KD or CE weight.*on_empty_window: skip"):
        trainer.train()
    with pytest.raises(ValueError, match=r"on_empty_window='skp'.*'skip'"):
        make_args(tmp_path, on_empty_window="skp")


def test_skipped_windows_train_at_a_connected_zero_and_are_counted(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    args = make_args(
        tmp_path, supervision_preset="answer", per_device_train_batch_size=1, max_steps=4, on_empty_window="skip",
        learning_rate=1e-3,
    )  # fmt: skip
    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=Dataset.from_list(answer_rows("a-a-"))
    )
    # one empty micro-batch: a zero loss whose gradient reaches every student parameter (all zero)
    empty = trainer.data_collator(answer_rows("--"))
    loss = trainer.compute_loss(student, empty)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert all(g is not None and not g.any() for g in grads.values()), (
        "not graph-connected to every parameter"
    )
    student.zero_grad(set_to_none=True)
    # evaluation batches are never skipped
    student.eval()
    with pytest.raises(ValueError, match="in this evaluation batch"):
        trainer.compute_loss(student, empty)
    student.train()

    trainer.train()  # the four rows once: two windows have an answer, two do not
    assert trainer.windows_skipped_empty == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["windows_skipped_empty"] for h in logs][-1] == 2
    counts = [h["windows_skipped_empty"] for h in logs]
    zero_steps = [i for i in range(4) if counts[i] > (counts[i - 1] if i else 0)]
    assert len(zero_steps) == 2 and all(logs[i]["loss"] == 0.0 for i in zero_steps)
    assert all(logs[i]["loss"] > 0 for i in range(4) if i not in zero_steps)


def test_a_run_of_only_empty_windows_is_refused(tmp_path: Any) -> None:
    student, teacher = student_teacher()
    args = make_args(
        tmp_path,
        supervision_preset="answer",
        per_device_train_batch_size=2,
        max_steps=2,
        on_empty_window="skip",
    )
    trainer = SectionKDTrainer(
        student, teacher, args=args, train_dataset=Dataset.from_list(answer_rows("----"))
    )
    with pytest.raises(ValueError, match=r"all 2 optimizer steps of this run had no position to supervise"):
        trainer.train()


def test_skipped_windows_count_survives_a_resume(tmp_path: Any) -> None:
    import json

    from hf_cot_distill.trainers.kd_trainer import COUNTERS_FILE

    def run(out: Any, **kwargs: Any) -> SectionKDTrainer:
        student, teacher = student_teacher()
        args = make_args(
            out, supervision_preset="answer", per_device_train_batch_size=1, max_steps=6, on_empty_window="skip",
            save_strategy="steps", save_steps=3, learning_rate=1e-3,
        )  # fmt: skip
        trainer = SectionKDTrainer(
            student, teacher, args=args, train_dataset=Dataset.from_list(answer_rows("a--a-a"))
        )
        trainer.train(**kwargs)
        return trainer

    full = run(tmp_path / "full")
    assert full.windows_skipped_empty == 3
    saved = json.loads((tmp_path / "full/checkpoint-3" / COUNTERS_FILE.format(rank=0)).read_text())
    assert (
        1 <= saved["windows_skipped_empty"] < 3
    )  # some before the checkpoint, some after: restored, not recounted
    resumed = run(tmp_path / "full", resume_from_checkpoint=str(tmp_path / "full/checkpoint-3"))
    assert resumed.windows_skipped_empty == full.windows_skipped_empty
