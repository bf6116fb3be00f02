"""Section ids: the one currency every stage of the pipeline carries beside ``input_ids``.

Every token of a training sequence belongs to exactly one section:

* ``PAD``    (0) padding; never supervised.
* ``PROMPT`` (1) the question / context / in-context inputs.
* ``COT``    (2) the chain of thought (reasoning).
* ``ANSWER`` (3) the final answer.

Marker tokens belong to the section they open or close: an opening marker (``<think>``,
``[think_start]``) is the first token of the section it opens and a closing marker
(``</think>``, ``[answer_end]``) the last token of the section it closes. A sequence-level
``bos`` belongs to ``PROMPT``; an ``eos`` that ends an example belongs to ``ANSWER``.

Section ids are stored as small integers (``int8`` in datasets, ``torch.long`` in batches).
"""

from __future__ import annotations

from enum import IntEnum


class Section(IntEnum):
    """Per-token section id. Values are stable: they are written to datasets."""

    PAD = 0
    PROMPT = 1
    COT = 2
    ANSWER = 3


SECTION_NAMES: dict[int, str] = {int(s): s.name.lower() for s in Section}
