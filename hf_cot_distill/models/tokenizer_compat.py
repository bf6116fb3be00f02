"""Teacher/student tokenizer compatibility, checked once before any logit is compared.

Token-level KD compares the teacher's and the student's distributions column by column, so
column ``i`` must mean the same token string for both, every special token must sit at the same
id, and a sample must be rendered and split into the same tokens for both. This module checks
exactly that and refuses everything else: we do not align different vocabularies (no
cross-tokenizer KD); the fix is a teacher and a student of the same tokenizer family.

What is compared, cheapest first (all problems are collected and raised together):

1. embedding rows: each model's ``*_vocab_rows`` (rows of its input/output embedding, often
   padded: 151,936 for every Qwen2.5 model) must be at least the tokenizer's id range;
2. special-token roles (``bos``/``eos``/``pad``/``unk``): same token at the same id;
3. the real vocabulary, ``len(tokenizer)`` tokens including added ones: the token -> id maps
   must be equal. With ``allow_added_token_superset=True`` a vocabulary that is the other one
   plus extra tokens at the end (Qwen3 = Qwen2.5 + ``<tool_response>``, ``</tool_response>``,
   ``<think>``, ``</think>``) is accepted and aligned on the common prefix of ids;
4. the tokenization pipeline (normalizer, pre-tokenizer, BPE merges) of fast tokenizers: the
   same vocabulary with other merges splits the same text differently; and the added tokens of
   the shared ids with their ``AddedToken`` flags (``special``, ``lstrip``, ``rstrip``,
   ``normalized``, ``single_word``): ``<think>`` with ``lstrip=True`` on one side swallows the
   space before it, so ``"hi <think>"`` becomes other ids, and ``special`` decides what
   ``skip_special_tokens`` drops;
5. the chat template (``check_chat_template``), since samples are rendered once for both.

Identical serialized fast tokenizers (the usual case: one family) take a fast path: one string
comparison, no vocabulary walk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from hf_cot_distill.core.validation import check_int

SPECIAL_TOKEN_ROLES: tuple[str, ...] = ("bos_token", "eos_token", "pad_token", "unk_token")
_SHOW = 6  # how many differing ids / tokens a message lists
_PROBE_CONVERSATION = (
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
)
_ROWS_FIX_END = " or use the tokenizer the model was trained with."
_FIX = (
    "fix: use a teacher and a student of the same tokenizer family (e.g. Qwen2.5 teacher and Qwen2.5 "
    "student); an explicit alignment between different vocabularies is not supported."
)


@dataclass(frozen=True)
class TokenizerCompatReport:
    """Outcome of :func:`check_tokenizer_compatibility` (only built when compatible).

    Attributes:
        vocab_size: the shared real vocabulary: logit columns ``[0, vocab_size)`` mean the same
            token for both models. KD must compare only these columns (the rows above are
            embedding padding, or, with ``aligned_on_common_prefix``, tokens one side lacks),
            and every input id must be ``< vocab_size``.
        teacher_vocab_size: ``len(teacher_tokenizer)``.
        student_vocab_size: ``len(student_tokenizer)``.
        teacher_vocab_rows: rows of the teacher's embedding / logit columns (as given).
        student_vocab_rows: rows of the student's embedding / logit columns (as given).
        special_token_ids: role (``"eos_token"`` …) -> shared id, ``None`` when unset.
        aligned_on_common_prefix: one vocabulary extends the other with extra tokens at the end
            and the check aligned on the common prefix (``allow_added_token_superset=True``).
        chat_template_checked: the chat templates were compared (and are equal).
        notes: human-readable facts worth logging (padding rows, alignment, skipped checks).
    """

    vocab_size: int
    teacher_vocab_size: int
    student_vocab_size: int
    teacher_vocab_rows: int
    student_vocab_rows: int
    special_token_ids: dict[str, int | None]
    aligned_on_common_prefix: bool
    chat_template_checked: bool
    notes: tuple[str, ...]

    @property
    def teacher_padding_rows(self) -> int:
        """Teacher embedding rows beyond the shared vocabulary (padding; never compared in KD)."""
        return self.teacher_vocab_rows - self.vocab_size

    @property
    def student_padding_rows(self) -> int:
        """Student embedding rows beyond the shared vocabulary (padding; never compared in KD)."""
        return self.student_vocab_rows - self.vocab_size


def _serialized(tokenizer: Any) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend.to_str() if backend is not None else None


def _pipeline_fingerprint(tokenizer: Any) -> str | None:
    """Hash of the normalizer, pre-tokenizer and model (BPE vocab + merges + flags); ``None`` if slow.

    Read from the pipeline objects' own serialisations, without parsing the multi-MB
    ``tokenizer.json``. Added tokens are not part of it (they are compared as vocabulary).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256()
    for part in (backend.normalizer, backend.pre_tokenizer, backend.model):
        digest.update(b"\0" if part is None else part.__getstate__())
        digest.update(b"\1")
    return digest.hexdigest()


ADDED_TOKEN_FLAGS: tuple[str, ...] = ("special", "lstrip", "rstrip", "normalized", "single_word")


def _added_tokens(tokenizer: Any) -> dict[int, tuple[Any, ...]]:
    """id -> ``(content, *ADDED_TOKEN_FLAGS)`` of every added token (``added_tokens_decoder``)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {
        int(i): (str(getattr(t, "content", t)), *(getattr(t, flag, None) for flag in ADDED_TOKEN_FLAGS))
        for i, t in decoder.items()
    }


def _compare_added_tokens(teacher: Any, student: Any, shared: int) -> str | None:
    """A problem naming the added tokens of ids ``< shared`` whose content or flags differ."""
    t_added, s_added = _added_tokens(teacher), _added_tokens(student)
    diffs = []
    for i in sorted(set(t_added) | set(s_added)):
        a, b = t_added.get(i), s_added.get(i)
        if i >= shared or a == b:
            continue
        if a is None or b is None:
            token, side = (a, "teacher") if b is None else (b, "student")
            diffs.append(
                f"{token[0]!r} (id {i}) is an added token (matched whole, never split) for the {side} only"
            )
        elif a[0] != b[0]:
            diffs.append(f"id {i} is the added token {a[0]!r} for the teacher but {b[0]!r} for the student")
        else:
            flags = ", ".join(
                f"{flag}={x} for the teacher but {flag}={y} for the student"
                for flag, x, y in zip(ADDED_TOKEN_FLAGS, a[1:], b[1:])
                if x != y
            )
            diffs.append(f"{a[0]!r} (id {i}): {flags}")
    if not diffs:
        return None
    more = f"; and {len(diffs) - _SHOW} more" if len(diffs) > _SHOW else ""
    return (
        f"added tokens: {len(diffs)} added tokens of the shared ids differ, so one text can be split (or "
        f"decoded with skip_special_tokens) differently for the teacher and the student: "
        + "; ".join(diffs[:_SHOW])
        + more
        + "; fix: add these tokens with the same AddedToken flags (special, lstrip, rstrip, normalized, "
        "single_word) to both tokenizers, or use the same tokenizer files."
    )


def _special_ids(tokenizer: Any) -> dict[str, tuple[str | None, int | None]]:
    out: dict[str, tuple[str | None, int | None]] = {}
    for role in SPECIAL_TOKEN_ROLES:
        token = getattr(tokenizer, role, None)
        token = None if token is None else str(token)
        out[role] = (token, getattr(tokenizer, f"{role}_id", None) if token is not None else None)
    return out


def _id_range(vocab: dict[str, int]) -> int:
    return max(vocab.values(), default=-1) + 1


def _compare_vocab(
    teacher: dict[str, int], student: dict[str, int], allow_superset: bool
) -> tuple[int | None, list[str], list[str]]:
    """Return ``(shared_size or None, problems, notes)`` for two token -> id maps."""
    if teacher == student:
        return len(teacher), [], []
    t_by_id = {i: tok for tok, i in teacher.items()}
    s_by_id = {i: tok for tok, i in student.items()}
    common = min(_id_range(teacher), _id_range(student))
    differing = [i for i in range(common) if t_by_id.get(i) != s_by_id.get(i)]
    if differing:
        examples = ", ".join(f"id {i}: {t_by_id.get(i)!r} vs {s_by_id.get(i)!r}" for i in differing[:_SHOW])
        return (
            None,
            [
                f"vocabulary: {len(differing)} of the {common} shared ids map to different tokens "
                f"(teacher {len(teacher)} tokens, student {len(student)}), e.g. {examples}."
            ],
            [],
        )
    longer, side = (t_by_id, "teacher") if len(teacher) > len(student) else (s_by_id, "student")
    extra_ids = sorted(i for i in longer if i >= common)
    extras = ", ".join(f"{longer[i]!r} ({i})" for i in extra_ids[:_SHOW])
    more = f" and {len(extra_ids) - _SHOW} more" if len(extra_ids) > _SHOW else ""
    what = (
        f"the {side} tokenizer has {len(extra_ids)} extra tokens after the {common} ids both share "
        f"(ids {common}..{common + len(extra_ids) - 1}): {extras}{more}"
    )
    if not allow_superset:
        return (
            None,
            [
                f"vocabulary: {what}. Ids 0..{common - 1} agree; pass allow_added_token_superset=True to "
                "align on that common prefix (the extra tokens are then never supervised)."
            ],
            [],
        )
    note = (
        f"aligned on the common prefix: {what}. KD compares logit columns 0..{common - 1} only; "
        f"tokenize the data with the {'student' if side == 'teacher' else 'teacher'} tokenizer (the "
        f"shorter one) so no input id reaches {common}: text such as {longer[extra_ids[0]]!r} is then "
        "split into ordinary BPE tokens."
    )
    return common, [], [note]


def _first_difference(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _compare_chat_templates(teacher: Any, student: Any) -> str | None:
    t_tpl, s_tpl = getattr(teacher, "chat_template", None), getattr(student, "chat_template", None)
    if t_tpl == s_tpl:
        return None
    if t_tpl is None or s_tpl is None:
        missing = "teacher" if t_tpl is None else "student"
        return f"chat_template: the {missing} tokenizer has no chat template and the other has one."
    detail = ""
    try:
        rendered = [
            tok.apply_chat_template(list(_PROBE_CONVERSATION), tokenize=False) for tok in (teacher, student)
        ]
        at = _first_difference(*rendered)
        detail = (
            f" Rendering a two-turn probe conversation differs from character {at}: teacher "
            f"{rendered[0][max(at - 20, 0) : at + 60]!r} vs student {rendered[1][max(at - 20, 0) : at + 60]!r}."
            if rendered[0] != rendered[1]
            else " (They render the probe conversation identically but differ in other cases.)"
        )
    except Exception as err:  # a template that cannot render the probe is itself a finding
        detail = f" (rendering a probe conversation failed: {type(err).__name__}: {err})"
    return (
        "chat_template: the teacher and student chat templates differ, so one rendered sample would not "
        f"mean the same text to both.{detail} Pass check_chat_template=False only if you render the data "
        "with one of them yourself and know the other model accepts that format."
    )


def check_tokenizer_compatibility(
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    *,
    teacher_vocab_rows: int,
    student_vocab_rows: int,
    check_chat_template: bool = True,
    allow_added_token_superset: bool = False,
) -> TokenizerCompatReport:
    """Check that teacher and student logits can be compared column by column.

    Args:
        teacher_tokenizer: the teacher's tokenizer (a ``transformers`` tokenizer; fast ones get
            the pipeline check and the fast path).
        student_tokenizer: the student's tokenizer.
        teacher_vocab_rows: rows of the teacher's embedding matrix (``config.vocab_size`` or
            ``model.get_output_embeddings().weight.shape[0]``); may exceed ``len(tokenizer)``.
            Any integer type (``int``, ``numpy.int64``); not a bool.
        student_vocab_rows: the same for the student.
        check_chat_template: also require equal chat templates.
        allow_added_token_superset: accept a vocabulary that is the other one plus extra tokens
            at the end, aligning on the common prefix (reported in ``notes``).

    Returns:
        A :class:`TokenizerCompatReport`.

    Raises:
        ValueError: naming every difference found (rows, special tokens, vocabulary with the
            differing ids/tokens, tokenization pipeline and added-token flags, chat template) and
            the fix.
    """
    for name, rows in (
        ("teacher_vocab_rows", teacher_vocab_rows),
        ("student_vocab_rows", student_vocab_rows),
    ):
        check_int(name, rows, minimum=1, fix="pass the embedding matrix's row count")
    teacher_vocab_rows, student_vocab_rows = int(teacher_vocab_rows), int(student_vocab_rows)
    problems: list[str] = []
    notes: list[str] = []
    t_len, s_len = len(teacher_tokenizer), len(student_tokenizer)

    identical = teacher_tokenizer is student_tokenizer
    if not identical:  # one string comparison spares the vocabulary walk for one family's files
        t_ser = _serialized(teacher_tokenizer)
        identical = t_ser is not None and t_ser == _serialized(student_tokenizer)
    t_vocab = teacher_tokenizer.get_vocab()
    s_vocab = t_vocab if identical else student_tokenizer.get_vocab()
    t_range, s_range = max(t_len, _id_range(t_vocab)), max(s_len, _id_range(s_vocab))

    # 1. embedding rows
    for side, rows, needed, length in (
        ("teacher", teacher_vocab_rows, t_range, t_len),
        ("student", student_vocab_rows, s_range, s_len),
    ):
        if rows < needed:
            problems.append(
                f"{side}_vocab_rows: {rows} embedding rows < {needed} token ids of the {side} tokenizer "
                f"(len {length}); ids >= {rows} would index past the embedding; fix: resize the {side}'s "
                f"token embeddings (model.resize_token_embeddings({needed}))" + _ROWS_FIX_END
            )

    # 2. special-token roles
    t_special, s_special = _special_ids(teacher_tokenizer), _special_ids(student_tokenizer)
    special_ids: dict[str, int | None] = {}
    for role in SPECIAL_TOKEN_ROLES:
        if t_special[role] != s_special[role]:
            problems.append(
                f"special tokens: {role} is {t_special[role][0]!r} (id {t_special[role][1]}) for the teacher "
                f"but {s_special[role][0]!r} (id {s_special[role][1]}) for the student; fix: set the same "
                f"{role} on both tokenizers, or use one tokenizer family."
            )
        special_ids[role] = t_special[role][1]

    # 3. vocabulary
    shared, vocab_problems, vocab_notes = _compare_vocab(t_vocab, s_vocab, allow_added_token_superset)
    problems += vocab_problems
    notes += vocab_notes
    aligned = bool(vocab_notes)
    if aligned and shared is not None:
        for role, special_id in special_ids.items():
            if special_id is not None and special_id >= shared:
                problems.append(
                    f"special tokens: {role} id {special_id} lies outside the {shared} shared ids; fix: use "
                    "one tokenizer family."
                )

    # 4. tokenization pipeline (same vocab, different merges/normalizer -> different ids for one text)
    if not identical and (shared is not None):
        t_fp, s_fp = _pipeline_fingerprint(teacher_tokenizer), _pipeline_fingerprint(student_tokenizer)
        if t_fp is not None and s_fp is not None and t_fp != s_fp:
            problems.append(
                "tokenization pipeline: the vocabularies agree but the normalizer, pre-tokenizer or BPE "
                "model (merges, flags) differ, so one text can become different ids for the teacher and the "
                "student; fix: use the same tokenizer files for both."
            )
        elif t_fp is None or s_fp is None:
            notes.append("tokenization pipeline not compared (a slow tokenizer has no tokenizer.json).")
        added_problem = _compare_added_tokens(teacher_tokenizer, student_tokenizer, shared)
        if added_problem:
            problems.append(added_problem)

    # 5. chat template
    if check_chat_template:
        template_problem = _compare_chat_templates(teacher_tokenizer, student_tokenizer)
        if template_problem:
            problems.append(template_problem)
        elif getattr(teacher_tokenizer, "chat_template", None) is None:
            notes.append("neither tokenizer has a chat template.")
    else:
        notes.append("chat templates not compared (check_chat_template=False).")

    if problems:
        family_problem = any(not p.endswith(_ROWS_FIX_END) for p in problems)
        raise ValueError(
            "teacher and student tokenizers are not compatible for token-level distillation:\n- "
            + "\n- ".join(problems)
            + (f"\n{_FIX}" if family_problem else "")
        )
    if shared is None:  # unreachable: a vocabulary mismatch always adds a problem
        raise ValueError(f"vocabulary: teacher and student vocabularies could not be aligned; {_FIX}")
    for side, rows in (("teacher", teacher_vocab_rows), ("student", student_vocab_rows)):
        if rows > shared:
            beyond = (
                "rows beyond them (padding, and tokens the other side lacks)" if aligned else "padding rows"
            )
            notes.append(
                f"{side} embedding has {rows} rows for {shared} shared tokens: {rows - shared} {beyond}, "
                "excluded from KD (logits sliced to the shared vocabulary)."
            )
    return TokenizerCompatReport(
        vocab_size=shared,
        teacher_vocab_size=t_len,
        student_vocab_size=s_len,
        teacher_vocab_rows=teacher_vocab_rows,
        student_vocab_rows=student_vocab_rows,
        special_token_ids=special_ids,
        aligned_on_common_prefix=aligned,
        chat_template_checked=check_chat_template,
        notes=tuple(notes),
    )
