"""Publishing to the Hugging Face Hub: the only module that talks to the Hub.

One entry point, :func:`push_folder`, takes an ``HfApi`` (so tests and mirrors pass their own
endpoint) and uploads a local model or dataset folder with its card::

    from hf_cot_distill.hub.push import default_api, push_folder
    push_folder(default_api(), "out/student", "me/qwen-cot-kd", "model", private=True)

Before anything is sent or written it checks, in this order (each failure says how to fix it):

1. the Hub is reachable in principle: not offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``);
2. a token exists, resolved the usual way (the ``HfApi``'s own token, ``HF_TOKEN``, the token
   saved by ``hf auth login``); it is never printed, logged or stored here;
3. the folder: it exists, has a card (``README.md`` with YAML metadata, or ``card=``), and a
   model folder holds ``*.safetensors`` weights and no pickles (``*.bin``, ``*.pt``, ``*.pkl`` …).

The Trainer's ``checkpoint-*/`` folders (optimizer and RNG state for resuming, as pickles) are
left out of the checks and of the upload (:func:`trainer_checkpoints` lists them); pickles
anywhere else are refused.

Only then is the repo created (``exist_ok``), the branch too when ``revision`` names one, and
exactly the checked files (and the card, if given, as ``README.md``) uploaded in one
``upload_folder`` call, from a staging folder of links. The card is written to
``folder/README.md`` — atomically — only after the upload succeeded, so the local folder is then
what landed on the Hub, and a failed push leaves it as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hf_cot_distill.core.outputs import MARKER
from hf_cot_distill.models.loading import PICKLE_SUFFIXES  # pickles run code on load: refused

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi
    from huggingface_hub.repocard import RepoCard

RepoType = Literal["model", "dataset"]
REPO_TYPES: tuple[str, ...] = ("model", "dataset")

# Never uploaded by ``upload_folder`` either (its DEFAULT_IGNORE_PATTERNS), so never checked.
_SKIPPED_DIRS = (".git", ".cache")
# Top-level folders the Trainer writes while training (``save_strategy`` steps/epoch): optimizer,
# scheduler and RNG state as pickles, for resuming. Not part of the published model.
_TRAINER_CHECKPOINT = re.compile(r"(tmp-)?checkpoint-\d+")
# A folder holding these (and no weights) is a dataset export, not a model.
_DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".csv")

LOGIN_HINT = "run `hf auth login` (or set the HF_TOKEN environment variable) with a write token"


class HubPushError(RuntimeError):
    """Publishing is impossible or failed (offline, no token, upload error); the message says why."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def default_api() -> HfApi:
    """An ``HfApi`` for the endpoint in ``HF_ENDPOINT`` *now* (huggingface_hub reads it once at
    import), token resolved by huggingface_hub as usual."""
    from huggingface_hub import HfApi

    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    return HfApi(endpoint=endpoint)


def ensure_can_push(api: HfApi, command: str = "hf-cot-distill push ...") -> None:
    """Raise :class:`HubPushError` when offline or when no token would be sent with ``api``;
    ``command`` is what the user ran (the fix repeats it with ``HF_HUB_OFFLINE=0``)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_token_to_send

    if constants.is_offline_mode() or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        raise HubPushError(
            "cannot push: offline mode is enabled (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1); "
            f"fix: unset it (e.g. `HF_HUB_OFFLINE=0 {command}`) on a machine that can reach "
            f"{api.endpoint}. Nothing was uploaded or written."
        )
    if get_token_to_send(api.token) is None:
        raise HubPushError(
            f"cannot push: no Hugging Face token found; fix: {LOGIN_HINT}. Nothing was uploaded or written."
        )


def check_repo_id(repo_id: str) -> None:
    """``ValueError`` unless ``repo_id`` is a valid ``"namespace/name"``."""
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)  # HFValidationError is a ValueError and says what is wrong
    if "/" not in repo_id:
        raise ValueError(f"repo_id: {repo_id!r} has no namespace; fix: 'your-user-or-org/{repo_id}'.")


def trainer_checkpoints(folder: str | os.PathLike) -> list[str]:
    """The Trainer's ``checkpoint-*`` folders at the top of ``folder`` (left out of a push)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _TRAINER_CHECKPOINT.fullmatch(p.name))


def _folder_files(folder: Path) -> list[Path]:
    """The files a push sends: all but ``.git`` / ``.cache`` and the Trainer checkpoints."""
    checkpoints = set(trainer_checkpoints(folder))
    files = []
    for p in folder.rglob("*"):
        parts = p.relative_to(folder).parts
        ours = p.name == MARKER  # the output-folder marker: local bookkeeping, not published
        if (
            p.is_file()
            and not ours
            and parts[0] not in checkpoints
            and not any(s in _SKIPPED_DIRS for s in parts)
        ):
            files.append(p)
    return sorted(files)


def check_folder(folder: str | os.PathLike, repo_type: str, *, has_card: bool = False) -> list[Path]:
    """Dry checks of a folder to publish; returns the files a push sends (relative paths: all
    but the Trainer's ``checkpoint-*/`` folders, see :func:`trainer_checkpoints`).

    Raises ``FileNotFoundError`` (no folder) or ``ValueError`` (no card, pickles, no weights).
    """
    from huggingface_hub import metadata_load

    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type: {repo_type!r} is not supported; fix: one of {list(REPO_TYPES)}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"folder {folder} does not exist or is not a directory; fix: pass the folder written by "
            "`save_pretrained` (model) or `hf-cot-distill generate --out` (dataset)."
        )
    files = [p.relative_to(folder) for p in _folder_files(folder)]
    readme = folder / "README.md"
    if not has_card:
        if not readme.is_file():
            raise ValueError(f"{folder} has no README.md card; fix: {_card_fix(folder, repo_type)}.")
        if not metadata_load(readme):
            raise ValueError(
                f"{readme} has no YAML metadata block (license, tags, ...); fix: "
                f"{_card_fix(folder, repo_type, replace=True)}, or add the block to it yourself."
            )
    if repo_type == "model":
        pickles = [str(p) for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise ValueError(
                f"refusing to publish pickle files {pickles} from {folder}: loading a pickle runs arbitrary "
                "code; fix: re-save the model with `model.save_pretrained(folder)` (safetensors by default) "
                "and delete the pickles, or move them out of the folder."
            )
        if not any(p.suffix == ".safetensors" for p in files):
            data = [str(p) for p in files if p.suffix.lower() in _DATA_SUFFIXES]
            if data:
                raise ValueError(
                    f"{folder} holds no *.safetensors weights but data files ({', '.join(data[:3])}"
                    f"{', ...' if len(data) > 3 else ''}): it looks like a dataset; fix: push it as one "
                    "(`hf-cot-distill push FOLDER --repo-type dataset ...`, repo_type='dataset')."
                )
            raise ValueError(
                f"{folder} holds no *.safetensors weights; fix: save the model with "
                "`model.save_pretrained(folder)` before pushing."
            )
    elif not [p for p in files if p.name != "README.md"]:
        raise ValueError(
            f"{folder} holds no data files; fix: export the dataset first (hf-cot-distill generate)."
        )
    return files


def _card_fix(folder: Path, repo_type: str, *, replace: bool = False) -> str:
    """The command that writes the card a push needs (Python: ``card=`` or hub.cards' writers)."""
    if repo_type == "model":
        flag = " --overwrite" if replace else ""
        return (
            f"`hf-cot-distill card {folder} --base-model MODEL{flag}` (or --from-scratch) writes one"
            f"{' in its place' if replace else ''}, then push again (Python: hub.cards.write_model_card "
            "or push_folder(card=...))"
        )
    return (
        f"export the dataset with `hf-cot-distill generate --config NAME --out {folder}`, which writes its "
        "card (Python: push_folder(card=...))"
    )


def write_folder_card(
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    base_model: str | None = None,
    teacher: str | None = None,
    datasets: list[str] | tuple[str, ...] = (),
    license: str = "apache-2.0",
    repo_id: str | None = None,
) -> Path:
    """Write ``folder/README.md``: the model card of a ``save_pretrained`` folder, rendered by
    :func:`hf_cot_distill.hub.cards.render_model_card` from what the folder holds (``config.json``'s
    model type as a tag; the numbers of ``train_metrics.json`` when a training run left one) and the
    given metadata (``base_model=None``: the card says it was trained from random weights).
    ``hf-cot-distill card`` is this function.

    An existing ``README.md`` is replaced only with ``overwrite`` (``FileExistsError`` otherwise); a
    folder that is not a model folder is a ``ValueError`` naming what it holds.
    """
    import json

    from hf_cot_distill.hub.cards import render_model_card

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"card: {folder} is not a folder; fix: pass the folder written by `save_pretrained`."
        )
    files = [p.relative_to(folder) for p in _folder_files(folder)]
    if not any(p.suffix == ".safetensors" for p in files) or not (folder / "config.json").is_file():
        data = any(p.suffix.lower() in _DATA_SUFFIXES for p in files)
        raise ValueError(
            f"card: {folder} is not a model folder (no *.safetensors + config.json); fix: "
            + (
                "a dataset folder's card is written by `hf-cot-distill generate --out FOLDER`."
                if data
                else "save the model there first (`model.save_pretrained(folder)`)."
            )
        )
    if repo_id is not None:
        check_repo_id(repo_id)
    readme = folder / "README.md"
    if readme.exists() and not overwrite:
        raise FileExistsError(
            f"card: {readme} exists; fix: keep it (push uses it), or replace it with "
            f"`hf-cot-distill card {folder} --overwrite`."
        )
    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError as err:
        raise ValueError(
            f"card: {folder / 'config.json'} is not valid JSON ({err}); fix: re-save the model."
        ) from None
    metrics_path = folder / "train_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    card = render_model_card(
        model_name=(repo_id or folder.resolve().name).split("/")[-1],
        base_model=base_model,
        teacher=teacher,
        datasets=list(datasets),
        license=license,
        tags=[str(config["model_type"])] if config.get("model_type") else [],
        eval_results=numbers or None,
        repo_id=repo_id,
    )
    _write_card(folder, card)
    return readme


def _write_card(folder: Path, card: RepoCard | str) -> None:
    """``folder/README.md`` <- card, through a temporary file and a rename (never half-written)."""
    text = card if isinstance(card, str) else str(card)
    tmp = folder / ".README.md.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / "README.md")
    finally:
        tmp.unlink(missing_ok=True)


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, RuntimeError]  # HfHubHTTPError, offline, LFS upload errors
    for module in ("httpx2", "httpx"):  # huggingface_hub's HTTP client (name depends on its version)
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def push_folder(
    api: HfApi,
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: RepoType = "model",
    *,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    card: RepoCard | str | None = None,
) -> CommitInfo:
    """Upload ``folder`` to ``repo_id`` on the Hub behind ``api``; returns the ``CommitInfo``.

    Args:
        api: the ``HfApi`` to use (its ``endpoint`` and ``token``; token ``None`` = the usual
            lookup: ``HF_TOKEN``, then the saved login).
        folder: a model folder (``save_pretrained``: safetensors + config + tokenizer) or a
            dataset folder (``hf-cot-distill generate``: parquet + README).
        repo_id: ``"namespace/name"``.
        repo_type: ``"model"`` or ``"dataset"``.
        private: visibility of a repo created now (ignored when it already exists).
        commit_message: defaults to ``"Upload <repo_type> with hf_cot_distill"``.
        revision: a branch to push to; created from ``main`` when missing.
        card: a ``ModelCard`` / ``DatasetCard`` / markdown text uploaded as ``README.md`` and
            written to ``folder/README.md`` once the upload succeeded; ``None``: the folder's
            own README is used.

    The Trainer's ``checkpoint-*/`` folders in ``folder`` are not uploaded.

    Raises:
        HubPushError: offline, no token, or the upload failed (the cause is chained).
        FileNotFoundError / ValueError: the folder failed a check (see :func:`check_folder`).
    """
    check_repo_id(repo_id)
    files = check_folder(folder, repo_type, has_card=card is not None)
    ensure_can_push(api)
    folder = Path(folder)
    message = commit_message or f"Upload {repo_type} with hf_cot_distill"
    with tempfile.TemporaryDirectory(prefix="hf_cot_distill_push_") as tmp:
        stage = _stage(folder, files, Path(tmp), card)
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=stage,
                repo_type=repo_type,
                revision=revision,
                commit_message=message,
            )
        except _network_errors() as err:
            raise HubPushError(
                f"upload of {folder} to {api.endpoint} ({repo_type} {repo_id}) failed: {err}; fix: check the "
                f"repo id, your network and that your token may write there ({LOGIN_HINT}). The folder was "
                "left as it was."
            ) from err
    if card is not None:
        _write_card(folder, card)
    return info


def _stage(folder: Path, files: list[Path], stage: Path, card: RepoCard | str | None) -> Path:
    """``stage`` <- links to exactly ``files`` of ``folder`` (copies where links fail), with
    ``card`` as ``README.md``: what the upload sends, without touching ``folder``."""
    for rel in files:
        if card is not None and rel == Path("README.md"):
            continue
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink((folder / rel).resolve(), target)
        except OSError:
            shutil.copy2(folder / rel, target)
    if card is not None:
        (stage / "README.md").write_text(card if isinstance(card, str) else str(card), encoding="utf-8")
    return stage
