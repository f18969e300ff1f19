"""Training: windows and masks, the trainer's files, exact resume, crash-safe checkpoints,
clear errors, data-parallel equality, fine-tuning, and the trained model used like any other."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lucidlm
from lucidlm.cli import main
from lucidlm.train.data import Batches, Split, Windows
from lucidlm.train.schedule import learning_rate

from conftest import DATA, train_in_one_and_two_processes

SMALL = ["--preset", "shakespeare-char", "--eval-interval", "5", "--eval-iters", "2", "--sample-tokens", "20",
         "--threads", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "shk.txt"
    path.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60000], encoding="utf-8")
    return path


def train(*argv) -> int:
    return main(["train", *argv])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- data --------------------------------------------------------------------------------------

def test_windows_shift_targets_by_one_and_respect_documents():
    tokens = np.arange(20, dtype=np.uint16)
    windows = Windows(Split(tokens, np.array([0, 12])), window=4, stride=4)
    # document 0..11: windows at 0 and 4, and a padded tail at 8; document 12..19: 12, then 16 padded
    assert len(windows) == 5
    inputs, targets, mask = windows.get(range(5))
    assert inputs[0].tolist() == [0, 1, 2, 3] and targets[0].tolist() == [1, 2, 3, 4]
    assert inputs[2].tolist() == [8, 9, 10, 11] and targets[2].tolist()[:3] == [9, 10, 11]
    assert mask[2].tolist() == [True, True, True, False]  # 12 belongs to the next document
    assert inputs[3].tolist() == [12, 13, 14, 15] and targets[3].tolist() == [13, 14, 15, 16]
    assert inputs[4].tolist() == [16, 17, 18, 19] and mask[4].tolist() == [True, True, True, False]
    real_targets = targets[mask].tolist()
    assert sorted(real_targets) == [t for t in range(1, 20) if t != 12]  # every target once, none across


def test_random_stride_one_windows_are_nanogpts():
    windows = Windows(Split(np.arange(100, dtype=np.uint16), np.array([0])), window=8, stride=1)
    assert len(windows) == 100 - 8  # starts 0 .. len - T - 1, no padded tail
    _, _, mask = windows.get(range(len(windows)))
    assert mask.all()


def test_random_batches_are_reproducible_and_split_across_processes():
    windows = Windows(Split(np.arange(1000, dtype=np.uint16), np.array([0])), window=8, stride=1)
    one = Batches(windows, 8, "random", seed=3).next()["inputs"]
    first = Batches(windows, 4, "random", seed=3, rank=0, world_size=2).next()["inputs"]
    second = Batches(windows, 4, "random", seed=3, rank=1, world_size=2).next()["inputs"]
    assert torch.equal(torch.cat([first, second]), one)


def test_learning_rate_schedule_matches_nanogpt():
    assert learning_rate(0, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3 / 101)
    assert learning_rate(100, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3)
    assert learning_rate(1050, 1e-3, 1e-4, 100, 2000) == pytest.approx(5.5e-4)
    assert learning_rate(2000, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-4)
    assert learning_rate(5000, 1e-3, 1e-4, 100, 2000) == 1e-4


def test_data_show(capsys, corpus):
    assert main(["data", "show", "--data", str(corpus), "--window", "6", "--stride", "3", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "window 0: tokens 0..6" in out and "window 1: tokens 3..9" in out
    assert "input : First·" in out and "target: irst·C" in out


# --- the trainer -------------------------------------------------------------------------------

def test_a_short_run_writes_everything(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert train("--data", str(corpus), *SMALL, "--max-iters", "10", "--out", str(run)) == 0
    records = metrics(run)
    assert [r["step"] for r in records] == list(range(0, 11))
    assert "val_loss" in records[0] and "train_loss" not in records[0]  # the starting point
    for key in ("step", "train_loss", "lr", "ms_per_iter", "tokens_per_s"):
        assert key in records[-1]
    assert "val_loss" in records[-1] and "val_ppl" in records[-1]
    assert (run / "loss.png").stat().st_size > 1000 and (run / "samples.txt").read_text().count("--- step") >= 2
    info = json.loads((run / "run.json").read_text())
    assert info["latest"] == "checkpoints/step-0000010" and info["best"]
    err = capsys.readouterr().err
    assert "done: 10 steps" in err and "best validation loss" in err


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, corpus):
    # the CPU (CUDA needs --deterministic for bit-identical runs: tests/test_gpu.py)
    common = ["--data", str(corpus), *SMALL, "--checkpoint-interval", "4", "--dropout", "0.1", "--device", "cpu"]
    assert train(*common, "--max-iters", "8", "--out", str(tmp_path / "straight")) == 0
    assert train(*common, "--max-iters", "4", "--out", str(tmp_path / "split")) == 0
    assert train("--resume", str(tmp_path / "split"), "--max-iters", "8") == 0
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "split")
    train_losses = lambda records: [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val_losses = lambda records: {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert len(train_losses(straight)) == 8
    assert train_losses(resumed) == train_losses(straight)  # exactly, not approximately
    assert val_losses(resumed)[5] == val_losses(straight)[5] and val_losses(resumed)[8] == val_losses(straight)[8]


def test_deterministic_is_on_while_training_and_given_back_after(tmp_path, corpus, monkeypatch):
    from lucidlm.train.trainer import Trainer

    seen = []
    step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self: seen.append(torch.are_deterministic_algorithms_enabled())
                        or step(self))
    assert train("--data", str(corpus), *SMALL, "--max-iters", "2", "--sample-tokens", "0", "--deterministic",
                 "--no-plot", "--out", str(tmp_path / "run")) == 0
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()


def test_old_checkpoints_are_pruned_but_the_best_is_kept(tmp_path, corpus):
    run = tmp_path / "run"
    assert train("--data", str(corpus), *SMALL, "--max-iters", "12", "--checkpoint-interval", "2",
                 "--keep-last", "2", "--out", str(run)) == 0
    info = json.loads((run / "run.json").read_text())
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert info["checkpoints"][-2:] == ["checkpoints/step-0000010", "checkpoints/step-0000012"]
    assert set(kept) == {n.split("/")[1] for n in info["checkpoints"]} and len(kept) <= 3
    assert info["best"] in info["checkpoints"]


def test_the_small_bpe_preset_trains_its_own_tokenizer(tmp_path, corpus):
    run = tmp_path / "run"
    assert train("--data", str(corpus), "--preset", "small-bpe", "--bpe-vocab-size", "300", "--window", "32",
                 "--batch-size", "2", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1",
                 "--sample-tokens", "5", "--out", str(run)) == 0
    tokenizer = lucidlm.Tokenizer.from_file(run)
    assert tokenizer.vocab_size == 300 and tokenizer.kind == "bpe"
    model, _ = lucidlm.load(run)
    assert model.config.vocab_size == 300 and model.config.n_layers == 6


def test_refuses_to_overwrite_another_run(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert train("--data", str(corpus), *SMALL, "--max-iters", "2", "--out", str(run)) == 0
    assert train("--data", str(corpus), *SMALL, "--max-iters", "2", "--out", str(run)) == 2
    assert "holds another training run" in capsys.readouterr().err
    assert train("--data", str(corpus), *SMALL, "--max-iters", "2", "--out", str(run), "--force") == 0


@pytest.mark.parametrize("content, message", [
    (b"", "corpus is empty"), ("caf\xe9".encode("latin-1"), "not UTF-8"), (b"x", "shorter than one window"),
])
def test_bad_corpora_are_clear_errors(tmp_path, capsys, content, message):
    (tmp_path / "c.txt").write_bytes(content)
    assert train("--data", str(tmp_path / "c.txt"), *SMALL, "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_vocabulary_that_does_not_fit_the_model(tmp_path, corpus, capsys):
    (tmp_path / "run.toml").write_text("max_iters = 2\n[model]\nvocab_size = 10\nd_model = 32\nn_layers = 1\n"
                                       "n_heads = 2\ncontext_length = 16\n")
    assert train("--data", str(corpus), "--tokenizer", "char", "--config", str(tmp_path / "run.toml"),
                 "--out", str(tmp_path / "r")) == 2
    assert "does not fit the model" in capsys.readouterr().err


def test_every_setting_explains_itself_in_help(capsys, monkeypatch):
    import dataclasses

    from lucidlm.train.settings import TrainSettings

    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping, which may split words at hyphens
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainSettings):
        assert f.metadata.get("help") and " ".join(f.metadata["help"].split()) in shown, f.name


def test_toml_config_and_flags_override_it(tmp_path, corpus):
    (tmp_path / "run.toml").write_text('tokenizer = "char"\nmax_iters = 50\nbatch_size = 4\neval_interval = 3\n'
                                       'eval_iters = 1\nsample_tokens = 0\n[model]\nd_model = 32\nn_layers = 1\n'
                                       'n_heads = 2\ncontext_length = 16\nposition = "rope"\n')
    assert train("--data", str(corpus), "--config", str(tmp_path / "run.toml"), "--max-iters", "3",
                 "--out", str(tmp_path / "r")) == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["settings"]["max_iters"] == 3 and info["settings"]["batch_size"] == 4
    assert info["config"]["d_model"] == 32 and info["config"]["position"] == "rope"


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch, capsys):
    from lucidlm.train.trainer import Trainer

    real = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self: math.nan if self.step >= 4 else real(self))
    assert train("--data", str(corpus), *SMALL, "--max-iters", "10", "--checkpoint-interval", "2",
                 "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "loss became nan at step 5" in err and "checkpoints/step-0000004" in err
    model, _ = lucidlm.load(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_full_disk_during_save_leaves_the_previous_checkpoint(tmp_path, corpus, monkeypatch, capsys):
    import errno

    from lucidlm.train import run_folder

    real = run_folder.write_checkpoint
    calls = []

    def failing(model, tokenizer, folder, extra=None):
        calls.append(folder)
        if len(calls) > 1:
            real(model, tokenizer, folder, extra)  # half a checkpoint, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, tokenizer, folder, extra)

    monkeypatch.setattr(run_folder, "write_checkpoint", failing)
    assert train("--data", str(corpus), *SMALL, "--max-iters", "6", "--checkpoint-interval", "2",
                 "--out", str(tmp_path / "r")) == 2
    assert "No space left" in capsys.readouterr().err
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["latest"] == "checkpoints/step-0000002"
    assert not list((tmp_path / "r" / "checkpoints").glob(".*tmp*"))
    lucidlm.load(tmp_path / "r")


def test_a_trained_model_loads_generates_and_exports_to_transformers(tmp_path, corpus):
    import transformers

    run = tmp_path / "run"
    assert train("--data", str(corpus), *SMALL, "--max-iters", "6", "--out", str(run)) == 0
    model, tokenizer = lucidlm.load(run)
    text = lucidlm.generate(model, tokenizer, "ROMEO:", max_tokens=80, overflow="shift")
    assert len(text) == 80 and set(text) <= set(tokenizer.chars)
    lucidlm.export_hf(model, tokenizer, tmp_path / "hf")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tokenizer.encode("To be, or not to be")])
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, model(ids), atol=1e-5, rtol=1e-5)


def test_fine_tune_a_pretrained_model(tmp_path, corpus):
    from conftest import make_tiny_hf_model

    tok = lucidlm.Tokenizer.train(corpus.read_text(encoding="utf-8"), 300, pattern="gpt2")
    model = make_tiny_hf_model("llama", vocab_size=300)
    model.save_pretrained(tmp_path / "base")
    tok.save_hf(tmp_path / "base" / "tokenizer.json")
    assert train("--data", str(corpus), "--init-from", str(tmp_path / "base"), "--max-iters", "6", "--window", "32",
                 "--batch-size", "4", "--eval-interval", "3", "--eval-iters", "2", "--sample-tokens", "5",
                 "--learning-rate", "1e-3", "--warmup-iters", "1", "--out", str(tmp_path / "ft")) == 0
    losses = [r["val_loss"] for r in metrics(tmp_path / "ft") if "val_loss" in r]
    assert losses[-1] < losses[0]
    tuned, tuned_tok = lucidlm.load(tmp_path / "ft")
    assert tuned.config.position == "rope" and tuned_tok.encode("hello") == tok.encode("hello")


# --- processes ---------------------------------------------------------------------------------

def _run_cli(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lucidlm", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _latest_checkpoint(run):
    try:
        return json.loads((run / "run.json").read_text()).get("latest")
    except FileNotFoundError:  # the trainer has not started yet (run.json is replaced atomically)
        return None


@pytest.mark.slow
def test_killing_the_trainer_mid_save_leaves_a_loadable_checkpoint(tmp_path, corpus):
    """Checkpoint every step of a larger model, so a kill at a random moment lands in a save."""
    (tmp_path / "big.toml").write_text('tokenizer = "char"\nsample_tokens = 0\nplot = false\neval_interval = 1000\n'
                                       '[model]\nd_model = 512\nn_layers = 6\nn_heads = 8\ncontext_length = 32\n')
    run = tmp_path / "run"
    proc = _run_cli(["--data", str(corpus), "--config", str(tmp_path / "big.toml"), "--max-iters", "1000",
                     "--batch-size", "2", "--checkpoint-interval", "1", "--keep-last", "2", "--out", str(run)])
    try:
        # Wait for a finished checkpoint, not for the folder: on a slow machine the first save alone
        # can outlast a fixed sleep. Then kill at a moment that nearly always lands inside a later save.
        deadline = time.time() + 180
        while time.time() < deadline and not _latest_checkpoint(run):
            time.sleep(0.2)
        assert _latest_checkpoint(run), "no checkpoint was written within 180 s"
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    info = json.loads((run / "run.json").read_text())
    latest = run / info["latest"]
    assert (latest / "model.safetensors").exists() and (latest / "trainer.pt").exists()
    model, _ = lucidlm.load(latest)
    assert model.config.d_model == 512
    assert train("--resume", str(run), "--max-iters", str(int(info["latest"].split("-")[1]) + 1)) == 0
    assert not list((run / "checkpoints").glob(".*tmp*"))  # half-written folders are cleaned up


def _records(run):
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_works(tmp_path, corpus):
    run = tmp_path / "run"
    proc = _run_cli(["--data", str(corpus), *SMALL, "--max-iters", "100000", "--checkpoint-interval", "0",
                     "--eval-interval", "100000", "--out", str(run)])
    deadline = time.time() + 120
    while time.time() < deadline and not any("train_loss" in r for r in _records(run)):
        time.sleep(0.2)  # a step has finished: there is something to save (a slow machine needs more than 2 s)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    info = json.loads((run / "run.json").read_text())
    step = int(info["latest"].split("-")[1])
    assert step > 0
    assert train("--resume", str(run), "--max-iters", str(step + 2)) == 0


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, corpus):
    common = ["--data", str(corpus), "--preset", "shakespeare-char", "--max-iters", "6", "--eval-interval", "3",
              "--eval-iters", "2", "--sample-tokens", "0", "--autocast", "off", "--threads", "1", "--no-plot"]
    one, two = map(metrics, train_in_one_and_two_processes(common, tmp_path))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_two_processes_with_dropout_resume_exactly(tmp_path, corpus):
    """Each process draws its own dropout masks, and a resumed run draws the same ones again."""
    common = ["--data", str(corpus), "--preset", "shakespeare-char", "--eval-interval", "100", "--eval-iters", "1",
              "--sample-tokens", "0", "--threads", "1", "--no-plot", "--batch-size", "4", "--dropout", "0.2",
              "--checkpoint-interval", "3"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "lucidlm", "train"]
    for argv in ([*common, "--max-iters", "6", "--out", str(tmp_path / "straight")],
                 [*common, "--max-iters", "3", "--out", str(tmp_path / "split")],
                 ["--resume", str(tmp_path / "split"), "--max-iters", "6"]):
        done = subprocess.run([*torchrun, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    train_losses = lambda run: [(r["step"], r["train_loss"]) for r in metrics(run) if "train_loss" in r]
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")


@pytest.mark.slow
def test_the_benchmark_configuration_learns_shakespeare(tmp_path):
    """The whole nanoGPT CPU benchmark: 2000 iterations; validation loss must fall below 2.0."""
    run = tmp_path / "shk"
    assert train("--data", str(DATA / "tinyshakespeare.txt"), "--preset", "shakespeare-char", "--threads", "2",
                 "--checkpoint-interval", "1000", "--out", str(run)) == 0
    final = [r for r in metrics(run) if "val_loss" in r][-1]
    assert final["step"] == 2000 and final["val_loss"] < 2.0
    sample = (run / "samples.txt").read_text().split("--- step 2000 ---")[-1]
    words = sample.split()
    assert len(words) > 20 and sum(w.isalpha() for w in words) / len(words) > 0.5  # word-shaped text
