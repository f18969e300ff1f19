"""Every verb, given each kind of bad input (a missing, damaged or wrong kind of file, a bad flag
value, text that is not UTF-8, a template that fails), exits non-zero with one line on stderr
and no traceback; a chat survives a bad turn; a run killed at the wrong moment still resumes."""

import io
import json
import shutil
import subprocess
import sys

import pytest
import torch

import lucidlm
from lucidlm.cli import main
from lucidlm.errors import LucidError

from conftest import DATA
from hostile import bounded

pytestmark = pytest.mark.usefixtures("inference_only")


def run(capsys, *argv, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err) -> None:
    assert code not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lucidlm: error:") or lines[0].startswith("lucidlm "), err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shakespeare):
    """A small model with a BPE tokenizer, saved in our format: every verb can load it quickly."""
    torch.manual_seed(0)
    tokenizer = lucidlm.Tokenizer.train(shakespeare[:20000], 300, pattern="gpt2")
    model = lucidlm.Transformer(lucidlm.Config(vocab_size=tokenizer.vocab_size, context_length=64, d_model=32,
                                               n_layers=2, n_heads=2)).eval()
    folder = tmp_path_factory.mktemp("tiny") / "model"
    lucidlm.save(model, tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "shk.txt"
    path.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


BAD_FLAGS = [
    ["--temp", "nan"], ["--temp", "1e-45"], ["--temp", "-1"], ["--top-p", "0"], ["--top-k", "-2"], ["--min-p", "2"],
    ["--presence-penalty", "inf"], ["--frequency-penalty", "nan"], ["--repetition-penalty", "nan"],
    ["--repetition-penalty", "0"], ["--max-tokens", "0"], ["--seed", str(2 ** 64)], ["--logit-bias", "3=nan"],
    ["--logit-bias", "x"], ["--threads", "0"], ["--threads", "100000000"], ["--dtype", "int3"],
    ["--device", "quantum"],
]


@pytest.mark.parametrize("verb", ["generate", "chat"])
@pytest.mark.parametrize("flags", BAD_FLAGS, ids=lambda f: " ".join(f))
def test_bad_generation_flags(capsys, monkeypatch, tiny, verb, flags):
    code, _, err = run(capsys, verb, "--model", str(tiny), "--prompt", "hi", *flags, stdin=b"hi\n",
                       monkeypatch=monkeypatch) if verb == "generate" else \
        run(capsys, verb, "--model", str(tiny), *flags, stdin=b"hi\n", monkeypatch=monkeypatch)
    one_line(code, err)


BAD_MODELS = ["/no/such/model.gguf", "{empty}", "{file}", "{tokenizer}", "{broken_json}", "{nested_json}"]


def _bad_model(kind: str, tmp_path, tiny) -> str:
    if kind == "{empty}":
        (tmp_path / "empty").mkdir()
        return str(tmp_path / "empty")
    if kind == "{file}":
        (tmp_path / "x.bin").write_bytes(b"\x00" * 100)
        return str(tmp_path / "x.bin")
    if kind == "{tokenizer}":
        return str(tiny / "lucidlm-tokenizer.json")
    if kind in ("{broken_json}", "{nested_json}"):
        shutil.copytree(tiny, tmp_path / "m")
        (tmp_path / "m" / "lucidlm.json").write_text("{broken" if kind == "{broken_json}" else "[" * 50000)
        return str(tmp_path / "m")
    return kind


@pytest.mark.parametrize("verb", ["generate", "chat", "info", "tokenize"])
@pytest.mark.parametrize("kind", BAD_MODELS)
def test_bad_model_paths(capsys, monkeypatch, tmp_path, tiny, verb, kind):
    model = _bad_model(kind, tmp_path, tiny)
    argv = {"generate": ["generate", "--model", model, "--prompt", "hi"], "chat": ["chat", "--model", model],
            "info": ["info", model], "tokenize": ["tokenize", "--model", model, "hi"]}[verb]
    code, _, err = run(capsys, *argv, stdin=b"hi\n", monkeypatch=monkeypatch)
    if verb == "tokenize" and kind in ("{tokenizer}", "{broken_json}", "{nested_json}"):
        assert code == 0  # a tokenizer is what tokenize wants, and the damage is in the model's file
    else:
        one_line(code, err)


def test_text_that_is_not_utf8_is_refused_or_replaced_never_changed(capsys, monkeypatch, tiny):
    code, _, err = run(capsys, "tokenize", "--model", str(tiny), "--ids", stdin=b"caf\xe9", monkeypatch=monkeypatch)
    one_line(code, err)
    assert "byte 0xE9 at offset 3" in err
    code, out, _ = run(capsys, "tokenize", "--model", str(tiny), "--ids", "--errors", "replace", stdin=b"caf\xe9",
                       monkeypatch=monkeypatch)
    tokenizer = lucidlm.Tokenizer.from_file(tiny)
    assert code == 0 and [int(i) for i in out.split()] == tokenizer.encode("caf\ufffd")
    code, _, err = run(capsys, "generate", "--model", str(tiny), stdin=b"\xff\xfe hi", monkeypatch=monkeypatch)
    one_line(code, err)
    code, _, err = run(capsys, "tokenize", "--model", str(tiny), "caf\udce9")  # how Python hands over argv bytes
    one_line(code, err)


def test_a_chat_survives_bad_turns(capsys, monkeypatch, tiny, tmp_path):
    lines = b"hello\n\xff\xfe\n/set temp nan\n/set presence_penalty inf\n/load " + str(tmp_path).encode() + \
        b"\n/stats\nstill here?\n"
    code, out, err = run(capsys, "chat", "--model", str(tiny), "--max-tokens", "3", stdin=lines,
                         monkeypatch=monkeypatch)
    assert code == 0 and "Traceback" not in out + err, err
    assert out.count("error:") == 4 and "cached tokens" in out


def test_a_failing_chat_template_is_one_error_and_the_chat_goes_on(tiny, tmp_path):
    from lucidlm.chat import ChatSession, Repl

    model, tokenizer = lucidlm.load(tiny)
    out = io.StringIO()
    for template in ("{{ 1/0 }}", "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
                     "{{ 'a' * 10**10 }}", "{{ 7 ** 100000000 }}", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
                     "{% include 'x.j2' %}", "{{ range(10**10) | list }}", "{{ raise_exception('no') }}",
                     "{% for m in messages %}{{ m.content * 100000000 }}{% endfor %}",
                     "{{ (((3 ** 1000) ** 1000) ** 1000) > 1 }}", "{{ 'a'|center(1500000000) }}",
                     "{{ '%1500000000d' % 1 }}", "{{ 'a'.ljust(1500000000) }}", "{{ '{:>1500000000}'.format('a') }}",
                     "{{ 'x'|indent(1500000000) }}", "{% for i in range(100000) %}{{ 'a' * 4000000 }}{% endfor %}",
                     "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                     "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"):
        tokenizer.chat_template = template
        session = ChatSession(model, tokenizer, max_tokens=2)
        with pytest.raises(LucidError, match="chat template"), bounded(5, 100):
            session.reply("hello", out.write)
        assert session.messages == []  # the turn is undone
        Repl(session, out=out, interactive=False).handle("/stats")


def test_an_unexpected_error_is_one_line_unless_debug(capsys, monkeypatch, tiny):
    from lucidlm import complete

    monkeypatch.setattr(complete, "stream_generate", lambda *a, **k: 1 / 0)
    code, _, err = run(capsys, "generate", "--model", str(tiny), "--prompt", "hi")
    assert code == 1 and err.count("\n") == 1 and "internal error: ZeroDivisionError" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["generate", "--model", str(tiny), "--prompt", "hi", "--debug"])
    code, out, _ = run(capsys, "tokenize", "--model", str(tiny), "--ids", "--", "--debug")  # text, not a flag
    assert code == 0 and out.split() == [str(i) for i in lucidlm.Tokenizer.from_file(tiny).encode("--debug")]


@pytest.mark.parametrize("setup, argv_tail, message", [
    (lambda p: p.write_text("x"), [], "is a file, not a folder"),
    (lambda p: None, ["--seed", str(2 ** 64)], "seed"),
    (lambda p: None, ["--learning-rate", "nan"], "learning_rate"),
    (lambda p: None, ["--grad-clip", "inf"], "grad_clip"),
    (lambda p: None, ["--threads", "100000000"], "threads"),
])
def test_bad_training_requests(capsys, tmp_path, corpus, setup, argv_tail, message):
    setup(tmp_path / "run")
    code, _, err = run(capsys, "train", "--data", str(corpus), "--preset", "shakespeare-char", "--max-iters", "1",
                       "--out", str(tmp_path / "run"), *argv_tail)
    one_line(code, err)
    assert message in err


@pytest.mark.parametrize("toml", ['max_iters = "many"', "batch_size = 2.5", "learning_rate = nan",
                                  "learning_rate = 1" + "0" * 400,
                                  'seed = "x"', "[model]\nn_layers = \"four\""])
def test_a_toml_file_of_the_wrong_types(capsys, tmp_path, corpus, toml):
    (tmp_path / "run.toml").write_text(toml)
    code, _, err = run(capsys, "train", "--data", str(corpus), "--preset", "shakespeare-char", "--config",
                       str(tmp_path / "run.toml"), "--out", str(tmp_path / "run"))
    one_line(code, err)


SHORT = ["--preset", "shakespeare-char", "--eval-interval", "2", "--eval-iters", "1", "--sample-tokens", "0",
         "--no-plot", "--checkpoint-interval", "2", "--threads", "2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus):
    run_folder = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(corpus), *SHORT, "--max-iters", "4", "--keep-last", "1",
                 "--out", str(run_folder)]) == 0
    return run_folder


@pytest.mark.parametrize("damage", ["run.json garbage", "run.json a list", "run.json no settings",
                                    "trainer.pt garbage", "trainer.pt empty", "metrics half a line",
                                    "settings of the wrong type", "shards metadata garbage"])
def test_a_damaged_run_resumes_or_says_why_in_one_line(capsys, tmp_path, finished_run, damage):
    run_folder = tmp_path / "run"
    shutil.copytree(finished_run, run_folder)
    info = json.loads((run_folder / "run.json").read_text())
    checkpoint = run_folder / info["latest"]
    if damage == "run.json garbage":
        (run_folder / "run.json").write_text("{{{")
    elif damage == "run.json a list":
        (run_folder / "run.json").write_text("[]")
    elif damage == "run.json no settings":
        (run_folder / "run.json").write_text(json.dumps({**info, "settings": None}))
    elif damage == "trainer.pt garbage":
        (checkpoint / "trainer.pt").write_bytes(b"PK\x03\x04garbage")
    elif damage == "trainer.pt empty":
        (checkpoint / "trainer.pt").write_bytes(b"")
    elif damage == "metrics half a line":
        with open(run_folder / "metrics.jsonl", "a") as f:
            f.write('{"step": 5, "train_lo')
    elif damage == "settings of the wrong type":
        (run_folder / "run.json").write_text(json.dumps({**info, "settings": {**info["settings"], "batch_size": "x"}}))
    else:
        (run_folder / "data" / "meta.json").write_text("{{{")
    code, _, err = run(capsys, "train", "--resume", str(run_folder), "--max-iters", "6")
    if damage in ("metrics half a line", "shards metadata garbage"):
        assert code == 0, err  # recoverable: the half line is dropped, the shards are prepared again
    else:
        one_line(code, err)


def test_a_run_killed_between_saving_and_pruning_resumes_from_the_newest_checkpoint(tmp_path, finished_run):
    """run.json still names the checkpoint that pruning deleted; the newer one is complete on disk."""
    run_folder = tmp_path / "run"
    shutil.copytree(finished_run, run_folder)
    info = json.loads((run_folder / "run.json").read_text())
    assert info["latest"] == "checkpoints/step-0000004"
    gone = "checkpoints/step-0000001"  # as if pruned after run.json was written
    (run_folder / "run.json").write_text(json.dumps({**info, "latest": gone, "best": None, "checkpoints": [gone]}))
    assert main(["train", "--resume", str(run_folder), "--max-iters", "6"]) == 0
    assert json.loads((run_folder / "run.json").read_text())["latest"] == "checkpoints/step-0000006"


def test_the_cli_guard_also_holds_in_a_real_process(tmp_path):
    (tmp_path / "bad.tiktoken").write_text("IQ== 0\nIQ== 1\n")
    result = subprocess.run([sys.executable, "-m", "lucidlm", "tokenize", "--tokenizer", str(tmp_path / "bad.tiktoken"),
                             "x"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "line 2" in result.stderr


@pytest.mark.parametrize("argv", [
    ["tokenizer", "train", "--data", "{latin1}", "--vocab-size", "300", "--out", "{out}"],
    ["tokenizer", "train", "--data", "{corpus}", "--vocab-size", "10", "--out", "{out}"],
    ["tokenizer", "train", "--data", "{corpus}", "--vocab-size", "300", "--out", "{file}"],
    ["data", "show", "--data", "{latin1}"],
    ["data", "show", "--data", "{corpus}", "--tokenizer", "{file}"],
    ["data", "show", "--data", "{corpus}", "--window", "0"],
    ["tokenize", "--tokenizer", "{corpus}", "x"],
    ["tokenize", "--decode", "--tokenizer", "{tiny}", "1 2 99999"],
    ["train", "--data", "{corpus}", "--preset", "nope", "--out", "{out}"],
    ["train", "--resume", "{out}"],
])
def test_other_verbs_refuse_bad_input_in_one_line(capsys, tmp_path, corpus, tiny, argv):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "file").write_text("x")
    paths = {"{latin1}": str(tmp_path / "latin1.txt"), "{out}": str(tmp_path / "out"), "{file}": str(tmp_path / "file"),
             "{corpus}": str(corpus), "{tiny}": str(tiny)}
    code, _, err = run(capsys, *[paths.get(a, a) for a in argv])
    one_line(code, err)


def test_a_kill_while_pruning_leaves_run_json_naming_the_new_checkpoint(tmp_path, finished_run, monkeypatch):
    """The order itself: run.json is written before the old checkpoint is deleted."""
    from pathlib import Path

    from lucidlm.train import run_folder

    run_path = tmp_path / "run"
    shutil.copytree(finished_run, run_path)
    run = run_folder.RunFolder(run_path)
    latest = run.latest()
    model, tokenizer = lucidlm.load(latest)

    def killed(path, *args, **kwargs):  # dies at the first folder it would really delete
        if Path(path).exists():
            raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(6, model, tokenizer, run_folder.RunFolder.load_trainer_state(latest), is_best=True,
                            keep_last=1, extra={})
    monkeypatch.undo()
    assert json.loads((run_path / "run.json").read_text())["latest"] == "checkpoints/step-0000006"
    assert latest.exists()  # not pruned yet: the kill came first
    assert run.latest() == run_path / "checkpoints" / "step-0000006"
