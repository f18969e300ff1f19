"""The chat: a session object tested directly, and the real REPL driven in a pseudo-terminal."""

import json
import re
import sys

import pytest
import torch

from lucidlm import Config, Tokenizer, Transformer
from lucidlm.chat import ChatSession, Repl
from lucidlm.errors import LucidError



pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(scope="module")
def session_parts(shakespeare):
    tok = Tokenizer.train(shakespeare[:60000], 400, pattern="gpt2",
                          special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>")
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=tok.vocab_size, context_length=512, d_model=32, n_layers=2, n_heads=2)).eval()
    return model, tok


def test_each_turn_prefills_only_what_is_new(session_parts):
    model, tok = session_parts
    session = ChatSession(model, tok, temp=0, max_tokens=8, repetition_penalty=1.0)
    session.reply("Hello there", lambda s: None)
    first_prompt = session.last["prompt_tokens"]
    session.reply("And again", lambda s: None)
    assert session.last["reused"] >= first_prompt
    assert session.last["prefilled"] < session.last["prompt_tokens"] - first_prompt + 8
    assert len(session.messages) == 4


def test_retry_undo_reset(session_parts):
    model, tok = session_parts
    session = ChatSession(model, tok, temp=1.0, max_tokens=6, seed=0)
    first = session.reply("Tell me", lambda s: None)
    second = session.retry(lambda s: None)
    assert len(session.messages) == 2 and (first != second or first == "")
    session.undo()
    assert session.messages == []
    with pytest.raises(LucidError, match="nothing to undo"):
        session.undo()
    session.reply("x", lambda s: None)
    session.reset()
    assert session.messages == [] and session.cache.tokens == []


def test_save_and_load(session_parts, tmp_path):
    model, tok = session_parts
    session = ChatSession(model, tok, system="Be brief.", max_tokens=4)
    session.reply("Hi", lambda s: None)
    session.save(str(tmp_path / "c.json"))
    other = ChatSession(model, tok)
    other.load(str(tmp_path / "c.json"))
    assert other.messages == session.messages and other.system == "Be brief."
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LucidError, match="invalid JSON"):
        other.load(str(tmp_path / "bad.json"))
    (tmp_path / "wrong.json").write_text(json.dumps({"messages": [{"role": "wizard"}]}))
    with pytest.raises(LucidError, match="not a saved conversation"):
        other.load(str(tmp_path / "wrong.json"))
    with pytest.raises(LucidError, match="cannot read"):
        other.load(str(tmp_path / "missing.json"))


def test_settings_are_validated(session_parts):
    model, tok = session_parts
    session = ChatSession(model, tok)
    session.set("temp", "0.5")
    assert session.settings.temperature == 0.5
    for name, value, message in [("temp", "-1", "temperature"), ("top_p", "0", "top-p"), ("max_tokens", "0", "max_tokens"),
                                 ("colour", "red", "unknown setting"), ("top_k", "two", "needs a int")]:
        with pytest.raises(LucidError, match=message):
            session.set(name, value)
    assert session.settings.temperature == 0.5


def test_repl_commands_and_errors_keep_the_session_going(session_parts, tmp_path):
    import io

    model, tok = session_parts
    out = io.StringIO()
    repl = Repl(ChatSession(model, tok, max_tokens=4), out=out, interactive=False)
    for line in ["/help", "hello", "/stats", "/set temp -3", "/bogus", f"/load {tmp_path}/nope.json", "/settings"]:
        try:
            assert repl.handle(line)
        except LucidError as exc:
            out.write(f"error: {exc}\n")
    assert repl.handle("/exit") is False
    text = out.getvalue()
    assert "/retry" in text and "cached tokens" in text and "error: temperature" in text
    assert "unknown command /bogus" in text and "cannot read" in text


@pytest.mark.slow
def test_the_real_repl_in_a_terminal(tmp_path):
    """Two turns where the second refers to the first, /stats, /retry, /undo, /save, /load and
    Ctrl-C during an answer, with the default model, through a pseudo-terminal."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "lucidlm", "chat", "--temp", "0", "--max-tokens", "48", "--threads", "2"],
                          encoding="utf-8", timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                                              "PYTHONUNBUFFERED": "1", "TERM": "dumb"})
    try:
        child.expect("Type /help")
        child.expect("> ")
        child.sendline("Write one sentence about the sea.")
        child.expect("\r\n> ")
        first_answer = child.before
        assert len(first_answer.strip()) > 10
        child.sendline("Make it shorter.")
        child.expect("\r\n> ")
        child.sendline("/stats")
        child.expect(r"prefilled (\d+) new \((\d+) reused")
        prefilled, reused = int(child.match.group(1)), int(child.match.group(2))
        assert reused > prefilled > 0  # the second turn computed only its new tokens
        child.expect("> ")
        child.sendline("/retry")
        child.expect("\r\n> ")
        child.sendline("/undo")
        child.expect("removed the last exchange")
        child.sendline(f"/save {tmp_path}/conv.json")
        child.expect("saved 2 messages")
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.sendline(f"/load {tmp_path}/conv.json")
        child.expect("loaded 2 messages")
        child.sendline("/set max_tokens 400")
        child.expect("> ")
        child.sendline("Write a long story about a dragon and a knight.")
        child.expect("knight\\.\r\n")  # our own line, echoed
        child.expect(r"\w+ \w+ \w+")  # the answer has started
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect("> ")
        child.sendline("/stats")
        child.expect("interrupted")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]


@pytest.mark.slow
def test_chat_from_a_pipe():
    import subprocess

    result = subprocess.run([sys.executable, "-m", "lucidlm", "chat", "--temp", "0", "--max-tokens", "20"],
                            input="What is 2+2?\n/stats\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"cached tokens: \d+", result.stdout)
