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


@torch.no_grad()
def test_a_seed_samples_the_same_tokens_on_cuda_as_on_the_cpu(folder):
    from lucidlm.generation import generate_tokens, make_logits_processors, make_sampler

    gpu, _ = lucidlm.load(folder, device="cuda")
    cpu, _ = lucidlm.load(folder)
    sampler = make_sampler(temp=1.0, top_k=40, top_p=0.95, min_p=0.01)
    processors = make_logits_processors({3: 2.0}, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.2)
    runs = [generate_tokens(model, [5, 17, 42, 8], sampler=sampler, logits_processors=processors,
                            generator=torch.Generator().manual_seed(7)) for model in (gpu, cpu)]
    assert [next(runs[0])[0] for _ in range(15)] == [next(runs[1])[0] for _ in range(15)]


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


def test_deterministic_training_on_cuda_resumes_bit_for_bit(tmp_path):
    """CUDA adds some gradients in a racy order, so two plain runs differ in the last bits;
    --deterministic makes reruns and resumes identical, as CPU training always is."""
    from safetensors.torch import load_file

    corpus = tmp_path / "c.txt"
    corpus.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:100000], encoding="utf-8")
    common = ["train", "--data", str(corpus), "--preset", "shakespeare-char", "--device", "cuda", "--deterministic",
              "--eval-interval", "5", "--eval-iters", "2", "--sample-tokens", "0", "--checkpoint-interval", "4",
              "--dropout", "0.1", "--no-plot"]
    assert main([*common, "--max-iters", "8", "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--max-iters", "4", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--max-iters", "8"]) == 0
    assert not torch.are_deterministic_algorithms_enabled()  # the process-wide switch is given back
    losses = lambda run: [(r["step"], r.get("train_loss"), r.get("val_loss"))
                          for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["step"] > 4]
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    weights = lambda run: load_file(str(run / "checkpoints" / "step-0000008" / "model.safetensors"))
    straight, split = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(straight[name], split[name]) for name in straight)
