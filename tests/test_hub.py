"""hub.py end to end over real HTTP against the loopback Hub of tests/hub_server.py.

Every test that talks HTTP gets a fresh server on 127.0.0.1 and a socket guard that refuses any
other address, with the token lookup isolated (no HF_TOKEN, no saved login) and huggingface_hub
switched online for the test only (conftest makes the suite offline by default).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from hf_cot_distill.cli import main
from hf_cot_distill.data import CoTICLConfig
from hf_cot_distill.hub.cards import render_model_card
from hf_cot_distill.hub.datasets import export_dataset
from hf_cot_distill.hub.push import HubPushError, check_folder, push_folder, trainer_checkpoints
from tests.hub_server import LoopbackHub
from tests.tiny_tokenizer import tiny_qwen2_tokenizer

TOKEN = "hf_testSECRETtoken0123456789abcdef"
SMALL = CoTICLConfig(
    prompt_strategy="cot_special_token", n_examples_choices=(4,), num_tasks=6, num_eval_tasks=2
)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def online(monkeypatch, tmp_path):
    """huggingface_hub online, xet off (the loopback Hub serves the LFS protocol, not xet
    storage), no token anywhere, and no socket may leave the machine."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))

    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture
def hub(online):
    with LoopbackHub(token=TOKEN) as server:
        yield server
    assert server.unexpected == []  # the client hit no endpoint we did not mean it to


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def local_files(folder: Path) -> dict[str, bytes]:
    """What a push must send: every file but the output-folder marker (local bookkeeping)."""
    from hf_cot_distill.core.outputs import MARKER

    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def save_tiny_qwen2(folder: Path, vocab_size: int = 256) -> Qwen2ForCausalLM:
    """A tiny Qwen2ForCausalLM + tokenizer saved as safetensors; vocab 41,000 x hidden 64 in
    fp32 makes model.safetensors > 10 MB, the Hub's LFS threshold."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tiny_qwen2_tokenizer().save_pretrained(folder)
    return model


def test_the_socket_guard_refuses_other_hosts(online):
    with pytest.raises(AssertionError, match="only loopback"):
        socket.create_connection(("192.0.2.1", 443), timeout=0.1)  # TEST-NET-1, never routed


def test_push_exported_dataset_folder_byte_identical(hub, api, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", tasks_per_shard=4, progress=False)
    info = push_folder(api, folder, "me/cot-ds", "dataset", private=True, commit_message="first")

    assert hub.files("dataset", "me/cot-ds") == local_files(folder)
    assert sorted(local_files(folder)) == [
        "README.md",
        "small/eval-00000-of-00001.parquet",
        "small/train-00000-of-00002.parquet",
        "small/train-00001-of-00002.parquet",
    ]
    repo = hub.repo("dataset", "me/cot-ds")
    assert repo.private and [c["summary"] for c in repo.commits] == ["first"]
    assert info.oid == repo.commits[0]["oid"] and info.repo_url.repo_id == "me/cot-ds"
    assert set(hub.authorizations) == {f"Bearer {TOKEN}"}  # the token was sent, and only it
    out = capfd.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text


def test_push_tiny_qwen2_with_card_takes_the_lfs_path(hub, api, tmp_path):
    folder = tmp_path / "student"
    model = save_tiny_qwen2(folder, vocab_size=41_000)
    assert (folder / "model.safetensors").stat().st_size > 10 * 1024 * 1024
    card = render_model_card(
        model_name="tiny-cot-kd", base_model="Qwen/Qwen2.5-0.5B", teacher="Qwen/Qwen2.5-7B", repo_id="me/tiny"
    )
    push_folder(api, folder, "me/tiny", "model", card=card)

    received = hub.files("model", "me/tiny")
    assert received == local_files(folder)  # README.md written locally = the card uploaded
    assert received["README.md"].decode() == str(card)
    assert hub.upload_modes["model.safetensors"] == "lfs" and hub.upload_modes["config.json"] == "regular"
    assert received["model.safetensors"] in hub.lfs_objects.values()
    assert ("POST", "/me/tiny.git/info/lfs/objects/batch") in hub.requests

    # What arrived loads back into the same model.
    mirror = tmp_path / "mirror"
    for path, data in received.items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    loaded = AutoModelForCausalLM.from_pretrained(mirror)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_push_to_a_branch_creates_it(hub, api, tmp_path):
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None)))
    push_folder(api, folder, "me/m", "model", revision="exp-1")
    assert hub.files("model", "me/m", "exp-1") == local_files(folder)
    assert hub.files("model", "me/m") == {}  # main untouched
    push_folder(api, folder, "me/m", "model", revision="exp-1")  # existing repo and branch: fine
    assert len(hub.repo("model", "me/m").commits) == 2


def test_default_xet_pipeline_with_regular_files(hub, api, tmp_path, monkeypatch):
    """With hf_xet installed, upload_folder streams through its pipeline; files the Hub calls
    regular travel inline in the commit, so the loopback Hub serves that path too."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    push_folder(api, folder, "me/ds", "dataset")
    assert hub.files("dataset", "me/ds") == local_files(folder)
    assert not any("lfs" in path for _, path in hub.requests)


def test_missing_token_is_a_clear_error_and_nothing_is_written(hub, tmp_path, capfd):
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    card = render_model_card(model_name="m", base_model=None)
    with pytest.raises(HubPushError, match="no Hugging Face token found.*hf auth login"):
        push_folder(HfApi(endpoint=hub.endpoint), folder, "me/m", "model", card=card)
    assert not (folder / "README.md").exists() and hub.requests == []


def test_token_from_env_is_used_and_never_shown(hub, tmp_path, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    push_folder(HfApi(endpoint=hub.endpoint), folder, "me/ds", "dataset")
    assert set(hub.authorizations) == {f"Bearer {TOKEN}"}
    out = capfd.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text


def test_offline_is_a_clear_error(hub, api, tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubPushError, match="offline mode is enabled.*HF_HUB_OFFLINE"):
        push_folder(api, folder, "me/ds", "dataset")
    assert hub.requests == []


def test_rejected_token_is_wrapped_without_leaking_it(online, tmp_path):
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    with LoopbackHub(token="hf_the_right_one") as server:
        with pytest.raises(HubPushError, match="failed.*401") as err:
            push_folder(HfApi(endpoint=server.endpoint, token=TOKEN), folder, "me/ds", "dataset")
    assert TOKEN not in str(err.value) and "hf auth login" in str(err.value)
    assert server.repos == {}  # refused at repo creation


def test_pickles_are_refused(hub, api, tmp_path):
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None)))
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    (folder / "extra").mkdir()
    (folder / "extra" / "optimizer.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"pickle files \['extra/optimizer.pt', 'pytorch_model.bin'\]"):
        push_folder(api, folder, "me/m", "model")
    assert hub.requests == []


def test_folder_checks_say_what_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_folder(tmp_path / "nope", "model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no README.md card.*write_model_card"):
        check_folder(empty, "model")
    (empty / "README.md").write_text("# no metadata\n")
    with pytest.raises(ValueError, match="no YAML metadata"):
        check_folder(empty, "model")
    (empty / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    with pytest.raises(ValueError, match=r"no \*.safetensors weights.*save_pretrained"):
        check_folder(empty, "model")
    with pytest.raises(ValueError, match="no data files"):
        check_folder(empty, "dataset")
    with pytest.raises(ValueError, match="repo_type"):
        check_folder(empty, "space")
    (empty / "model.safetensors").write_bytes(b"")
    assert check_folder(empty, "model") == [Path("README.md"), Path("model.safetensors")]
    with pytest.raises(ValueError, match="has no namespace"):
        push_folder(HfApi(endpoint="http://127.0.0.1:9"), empty, "justname", "model")


# ----------------------------------------------------------------------------------------- CLI


def test_cli_push_model_folder(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None, repo_id="me/m")))
    argv = ["push", str(folder), "--repo-id", "me/m", "--private", "--commit-message", "student v1"]
    assert main(argv) == 0
    assert hub.files("model", "me/m") == local_files(folder)
    assert (
        hub.repo("model", "me/m").private and hub.repo("model", "me/m").commits[0]["summary"] == "student v1"
    )
    out = capfd.readouterr()
    assert f"Pushed {folder} to {hub.endpoint}/me/m" in out.out
    assert TOKEN not in out.out + out.err


def test_cli_push_errors_exit_non_zero(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None)))
    assert main(["push", str(folder), "--repo-id", "me/m"]) == 2  # no token
    assert "no Hugging Face token found" in capfd.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert main(["push", str(folder), "--repo-id", "me/m"]) == 1  # rejected by the server
    err = capfd.readouterr().err
    assert "failed" in err and "401" in err and "hf_wrong" not in err
    (folder / "model.pt").write_bytes(b"\x80")
    assert main(["push", str(folder), "--repo-id", "me/m"]) == 2
    assert "refusing to publish pickle files ['model.pt']" in capfd.readouterr().err
    assert hub.repos == {}


def test_cli_generate_push_end_to_end(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    argv = ["generate", "--config", "cot_icl_lab_standard", "--out", str(out), "--num-tasks", "5"]
    argv += ["--num-eval-tasks", "2", "--no-progress", "--push_to_hub", "me/cot-icl", "--revision", "v0"]
    assert main(argv) == 0
    received = hub.files("dataset", "me/cot-icl", revision="v0")
    assert received == local_files(out)
    readme = received["README.md"].decode()
    assert 'load_dataset("me/cot-icl", "cot_icl_lab_standard")' in readme  # the card names the repo
    assert "config_name: cot_icl_lab_standard" in readme
    assert TOKEN not in "".join(capfd.readouterr())


def test_cli_generate_push_without_token_writes_nothing(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    out = tmp_path / "out"
    assert main(["generate", "--config", "cot_icl_lab_cot", "--out", str(out), "--push", "me/x"]) == 2
    assert "no Hugging Face token found" in capfd.readouterr().err
    assert not out.exists() and hub.requests == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["generate", "--config", "cot_icl_lab_cot", "--out", str(out), "--push", "bad//id"]) == 2
    assert not out.exists()
    assert main(["generate", "--config", "cot_icl_lab_cot", "--out", str(out), "--private"]) == 2
    assert "only apply to a push; fix: add --push REPO" in capfd.readouterr().err
    assert not out.exists() and hub.requests == []


def test_console_script_in_a_fresh_process(hub, tmp_path):
    """The installed entry point, configured only through the environment as a user would."""
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-m", "hf_cot_distill.cli", "push", str(folder), "--repo-id", "me/m"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert hub.files("model", "me/m") == local_files(folder)
    assert TOKEN not in done.stdout + done.stderr
    env.pop("HF_TOKEN")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no Hugging Face token found" in done.stderr


def _train_argv(out: Path, *extra: str) -> list[str]:
    recipe = ROOT / "recipes/tiny/cot_icl_lab_scratch.yaml"
    return ["train", "--config", str(recipe), "--max_steps", "2", "--output_dir", str(out),
            "--disable_tqdm", "true", *extra]  # fmt: skip


def test_cli_train_push_to_hub_end_to_end(hub, tmp_path, monkeypatch, capfd):
    """`train --push_to_hub true` publishes the saved folder through hub.py, not the Trainer's own push."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    out = tmp_path / "trained"
    push = ["--push_to_hub", "true", "--hub_model_id", "me/tiny-cot", "--hub_private_repo", "true"]
    assert main(_train_argv(out, *push)) == 2  # no token: refused before any training
    assert "no Hugging Face token found" in capfd.readouterr().err
    assert not out.exists() and hub.requests == []
    assert main(_train_argv(out, "--push_to_hub", "true")) == 2
    assert "push_to_hub needs hub_model_id" in capfd.readouterr().err

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(_train_argv(out, *push)) == 0
    received = hub.files("model", "me/tiny-cot")
    assert received == local_files(out)
    assert {"model.safetensors", "config.json", "README.md"} <= set(received)
    assert hub.repo("model", "me/tiny-cot").private
    printed = capfd.readouterr()
    assert f"Pushed {out} to {hub.endpoint}/me/tiny-cot" in printed.out
    assert TOKEN not in printed.out + printed.err


def test_cli_compress_push_to_hub_sends_the_last_stage(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    original = tmp_path / "original"
    assert main(_train_argv(original)) == 0
    out = tmp_path / "compressed"
    argv = ["compress", "--config", str(ROOT / "recipes/compress/tiny_cot_icl.yaml"), "--model_name_or_path",
            str(original), "--prune", "false", "--output_dir", str(out), "--disable_tqdm", "true",
            "--push_to_hub", "true", "--hub_model_id", "me/tiny-w8"]  # fmt: skip
    assert main(argv) == 0
    received = hub.files("model", "me/tiny-w8")
    assert received == local_files(out / "quantized")
    assert "## Compression" in received["README.md"].decode()
    assert TOKEN not in "".join(capfd.readouterr())


# ------------------------------------------------------------- Trainer checkpoints, failed pushes


def test_trainer_checkpoints_are_left_out_of_a_model_push(hub, api, tmp_path):
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "README.md").write_text(str(render_model_card(model_name="m", base_model=None)))
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"\x80\x04")
    (folder / "checkpoint-1" / "model.safetensors").write_bytes(b"old")
    assert trainer_checkpoints(folder) == ["checkpoint-1"]
    push_folder(api, folder, "me/m", "model")
    received = hub.files("model", "me/m")
    assert {"model.safetensors", "config.json", "README.md"} <= set(received)
    assert not [p for p in received if p.startswith("checkpoint-")]
    assert received == {k: v for k, v in local_files(folder).items() if not k.startswith("checkpoint-1/")}
    # a pickle elsewhere is still refused
    (folder / "sub").mkdir()
    (folder / "sub" / "optimizer.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"pickle files \['sub/optimizer.pt'\]"):
        push_folder(api, folder, "me/m", "model")


def test_cli_train_push_with_checkpoints_says_what_it_left_out(hub, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "trained"
    push = [
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "me/ckpt",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
    ]
    assert main(_train_argv(out, *push)) == 0
    assert (out / "checkpoint-1" / "optimizer.pt").is_file()
    received = hub.files("model", "me/ckpt")
    assert "model.safetensors" in received and not [p for p in received if p.startswith("checkpoint-")]
    printed = capfd.readouterr()
    assert "Left out of the upload: checkpoint-1/, checkpoint-2/" in printed.out
    assert TOKEN not in printed.out + printed.err


def test_failed_dataset_push_leaves_the_local_card_alone(online, tmp_path, monkeypatch, capfd):
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    before = local_files(folder)
    with LoopbackHub(token="hf_the_right_one") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        assert main(["push", str(folder), "--repo-type", "dataset", "--repo-id", "me/ds"]) == 1
    assert "401" in capfd.readouterr().err
    assert local_files(folder) == before  # the README still names no repo that was never created


def test_dataset_folder_pushed_as_a_model_suggests_repo_type_dataset(tmp_path):
    folder = tmp_path / "ds"
    export_dataset(SMALL, folder, config_name="small", progress=False)
    with pytest.raises(ValueError, match=r"looks like a dataset.*--repo-type dataset"):
        check_folder(folder, "model")


def test_offline_train_push_names_the_command_that_was_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = _train_argv(tmp_path / "t", "--push_to_hub", "true", "--hub_model_id", "me/m")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=0 hf-cot-distill train" in err and "hf-cot-distill push" not in err


def _fix_command(err: str) -> list[str]:
    """The `hf-cot-distill ...` command an error's fix names, as argv for main()."""
    import re
    import shlex

    found = re.search(r"`hf-cot-distill ([^`]+)`", err)
    assert found, err
    return shlex.split(found.group(1))


def test_push_without_a_card_names_the_card_command_and_it_works(hub, tmp_path, monkeypatch, capfd):
    """push refuses a model folder without a card; the fix line is a CLI command; running it writes
    the card and the push then goes through."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    (folder / "train_metrics.json").write_text('{"train_loss": 1.25, "data_rows": {"train": 3}}')
    capfd.readouterr()  # the save's progress bar
    assert main(["push", str(folder), "--repo-id", "me/m"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no README.md card" in err
    fix = _fix_command(err)
    assert fix == ["card", str(folder), "--base-model", "MODEL"] and hub.repos == {}
    with pytest.raises(SystemExit) as usage:  # what it was trained from is stated, never guessed
        main(["card", str(folder)])
    assert usage.value.code == 2 and "--base-model" in capfd.readouterr().err
    assert not (folder / "README.md").exists()

    assert main([*fix[:-1], "Qwen/Qwen2.5-0.5B", "--repo-id", "me/m"]) == 0
    assert f"Wrote {folder / 'README.md'}" in capfd.readouterr().out
    card = (folder / "README.md").read_text()
    assert "base_model: Qwen/Qwen2.5-0.5B" in card and "qwen2" in card and "1.25" in card
    assert 'from_pretrained("me/m")' in card
    assert main(["push", str(folder), "--repo-id", "me/m"]) == 0
    assert hub.files("model", "me/m") == local_files(folder)


def test_card_never_replaces_a_readme_without_overwrite(tmp_path, capsys):
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    mine = "# My notes\n\nnot a card\n"
    (folder / "README.md").write_text(mine)
    capsys.readouterr()  # the save's progress bar
    with pytest.raises(ValueError, match="no YAML metadata") as refused:
        check_folder(folder, "model")
    fix = _fix_command(str(refused.value))
    assert fix == ["card", str(folder), "--base-model", "MODEL", "--overwrite"]
    fix = [*fix[:2], "--from-scratch", fix[-1]]
    assert main(["card", str(folder), "--from-scratch"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert (folder / "README.md").read_text() == mine  # untouched
    assert main(fix) == 0
    assert check_folder(folder, "model")  # now a card with metadata
    assert (folder / "README.md").read_text() != mine


def test_card_refuses_what_is_not_a_model_folder(tmp_path, capsys):
    data = tmp_path / "data"
    export_dataset(SMALL, data, progress=False)
    (data / "README.md").unlink()
    capsys.readouterr()
    assert main(["card", str(data), "--from-scratch"]) == 2
    assert "hf-cot-distill generate" in capsys.readouterr().err
    with pytest.raises(ValueError, match="hf-cot-distill generate"):
        check_folder(data, "dataset")
    assert main(["card", str(tmp_path / "nope"), "--from-scratch"]) == 2
    assert "not a folder" in capsys.readouterr().err
    folder = tmp_path / "m"
    save_tiny_qwen2(folder)
    capsys.readouterr()
    assert main(["card", str(folder), "--from-scratch", "--repo-id", "justname"]) == 2
    assert "namespace" in capsys.readouterr().err
    assert not (folder / "README.md").exists()  # a refused card writes nothing
