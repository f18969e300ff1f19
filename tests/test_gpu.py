"""The same code on a CUDA device: parity with the CPU, cached decoding, and training with
bfloat16 autocast whose checkpoint loads back on the CPU. Skipped where there is no GPU (CI has
none); run on a GPU machine with `python -m pytest -m gpu`."""

import json

import pytest
import torch

import lucidlm
from lucidlm.cli import main

from conftest import DATA, make_tiny_hf_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-llama")
    make_tiny_hf_model("llama").save_pretrained(path)
    return path


@torch.no_grad()
def test_logits_on_cuda_match_the_cpu(folder):
    cpu, _ = lucidlm.load(folder)
    gpu, _ = lucidlm.load(folder, device="cuda")
    assert gpu.tok_emb.weight.is_cuda
    ids = torch.randint(0, 96, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    torch.testing.assert_close(gpu(ids.cuda(), attention_mask=mask.cuda()).cpu()[mask.bool()],
                               cpu(ids, attention_mask=mask)[mask.bool()], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_cached_decoding_on_cuda(folder):
    from lucidlm.generation import generate_tokens

    gpu, _ = lucidlm.load(folder, device="cuda")
    cpu, _ = lucidlm.load(folder)
    prompt = [5, 17, 42, 8]
    on_gpu, on_cpu = generate_tokens(gpu, prompt), generate_tokens(cpu, prompt)
    assert [next(on_gpu)[0] for _ in range(15)] == [next(on_cpu)[0] for _ in range(15)]


def test_training_on_cuda_with_bf16_autocast(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:100000], encoding="utf-8")
    assert main(["train", "--data", str(corpus), "--preset", "shakespeare-char", "--device", "cuda",
                 "--max-iters", "200", "--eval-interval", "100", "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in records if "val_loss" in r]
    assert records[0]["step"] == 0 and evals[-1] < evals[0] - 1.0  # from about ln(65) = 4.17
    model, tokenizer = lucidlm.load(tmp_path / "run")  # a CUDA-trained checkpoint loads on the CPU
    assert not model.tok_emb.weight.is_cuda
    assert len(lucidlm.generate(model, tokenizer, "ROMEO:", max_tokens=20)) == 20
