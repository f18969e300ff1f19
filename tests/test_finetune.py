"""Instruction tuning and LoRA: loss masks token by token, adapters that start at the base model,
PEFT's file format both ways against peft + transformers, merging, resume, DDP and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from lucidlm.cli import main
from lucidlm.errors import LucidError
from lucidlm.model.lora import LoRASettings, add_lora, lora_layers, merge_lora
from lucidlm.tokenizer import Tokenizer
from lucidlm.train.conversations import Renderer, alpaca_prompt
from lucidlm.train.instruction_set import instruction_records
from lucidlm.weights import load
from lucidlm.weights.adapters import write_adapter

from conftest import make_tiny_hf_model, train_in_one_and_two_processes

ALL_ROLES = ("q", "k", "v", "o", "gate", "up", "down")
CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."}]
RECORDS = [{"messages": CHAT[:2]}, {"instruction": "Name the opposite of hot.", "output": "Cold."},
           {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]


def learned_text(tokenizer, example) -> list[str]:
    """The learned stretches of an example, decoded."""
    spans, current = [], []
    for token, learn in zip(example.ids, example.learn):
        if learn:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


# --- loss masks ----------------------------------------------------------------------------------

def test_chat_masks_cover_every_assistant_turn_and_nothing_else(smollm_tokenizer):
    renderer = Renderer(smollm_tokenizer)
    example = renderer.render({"messages": CHAT}, "test")
    assert example.ids == smollm_tokenizer.apply_chat_template(CHAT)  # the same tokens as chatting renders
    assert learned_text(smollm_tokenizer, example) == ["Paris.<|im_end|>\n", "Rome.<|im_end|>\n"]
    assert example.asked == "What is the capital of France?"  # the question of the first answer
    prompt = smollm_tokenizer.apply_chat_template(CHAT[:1], add_generation_prompt=True)
    assert example.prompt_ids == prompt  # what the model is asked, up to its first answer


def test_instruction_records_as_chat_alpaca_and_plain_text(smollm_tokenizer):
    tok = smollm_tokenizer
    chat = Renderer(tok, "chat").render(RECORDS[2], "test")
    assert chat.ids == tok.apply_chat_template([{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                                                {"role": "assistant", "content": "5"}])
    assert learned_text(tok, chat) == ["5<|im_end|>\n"]
    alpaca = Renderer(tok, "alpaca").render(RECORDS[2], "test")
    prompt = tok.encode_ordinary(alpaca_prompt("Add the numbers.", "2 and 3"))
    assert alpaca.ids == prompt + tok.encode_ordinary("5") + [tok.eos_token_id]
    assert alpaca.learn == [False] * len(prompt) + [True, True]
    assert "### Input:\n2 and 3\n\n### Response:\n" in tok.decode(prompt)
    text = Renderer(tok).render({"text": "plain words"}, "test")
    assert text.ids == tok.encode_ordinary("plain words") and all(text.learn)
    everything = Renderer(tok, "chat", train_on_prompt=True).render({"messages": CHAT}, "test")
    assert all(everything.learn) and everything.ids == tok.apply_chat_template(CHAT)
    assert everything.prompt_ids == tok.apply_chat_template(CHAT[:1], add_generation_prompt=True)
    assert text.prompt_ids == []  # plain text asks nothing


def test_a_template_that_rewrites_earlier_turns_is_refused(smollm_tokenizer):
    tok = Tokenizer.from_dict(smollm_tokenizer.to_dict())
    # renders only the last message: the conversation does not grow turn by turn
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    with pytest.raises(LucidError, match="turn by turn as one growing text.*--train-on-prompt learns every token"):
        Renderer(tok, "chat").render({"messages": CHAT}, "chat.jsonl, line 1")
    assert all(Renderer(tok, "chat", train_on_prompt=True).render({"messages": CHAT}, "chat.jsonl, line 1").learn)


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    ('["a list"]', "line 2: a record must be a JSON object"),
    ('{"question": "?"}', "line 2: a record needs 'messages', 'instruction'"),
    ('{"instruction": "Do it.", "output": ""}', "line 2: 'output' must be a non-empty string"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: the conversation has no assistant turn"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "hi"}]}',
     "line 2: 'messages' must be a non-empty list of {'role': str, 'content': str}"),
])
def test_bad_records_are_one_line_errors_with_their_line(tmp_path, capsys, line, message):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(RECORDS[1]) + "\n" + line + "\n")
    assert main(["data", "show", "--data", str(data), "--chat"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_data_show_chat_marks_the_learned_tokens(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert main(["data", "show", "--data", str(data), "--chat", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 record(s); prompts rendered as chat" in out
    assert "⟦Paris.<|im_end|>\n  ⟧" in out and "⟦Cold.<|im_end|>" in out
    rows = [line.split() for line in out.splitlines()]
    rows = [r for r in rows if len(r) == 4 and r[0].isdigit() and r[3] in ("0", "1")]  # t, id, token, learn
    assert [r[2] for r in rows if r[3] == "1"][:3] == ["Paris", ".", "<|im_end|>"]


def test_the_instruction_set_holds_out_items_it_never_trains_on():
    train, held = instruction_records(held_out_per_kind=5, seed=0)
    assert len(held) == 30 and len(train) == 224
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in held}
    assert instruction_records(5, 0) == (train, held)  # the same seed, the same split
    capital = next(r for r in held + train if r["instruction"].startswith("What is the capital of France?"))
    assert capital["output"] == "Paris"
    assert all(r["output"] == str(eval(r["instruction"].split("What is ")[1].split("?")[0].replace("plus", "+")))
               for r in train if r["kind"] == "sum")


# --- LoRA against the base model and against peft --------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (transformers model, its folder) for a Llama and a Qwen2 (q/k/v biases)."""
    out = {}
    for family in ("llama", "qwen2"):
        model = make_tiny_hf_model(family)
        folder = tmp_path_factory.mktemp(f"lora-{family}")
        model.save_pretrained(folder)
        out[family] = (model, folder)
    return out


def randomize_adapters(model, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for b in layer.lora_B.values():
                b.copy_(torch.randn(b.shape, generator=generator) * 0.3)


IDS = torch.tensor([[5, 17, 3, 44, 90, 12, 7, 61], [2, 2, 9, 31, 8, 77, 40, 1]])
MASK = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])  # left padding in the second row


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_step_zero_equals_the_base_and_only_adapters_train(tiny, family):
    model, _ = load(tiny[family][1], dtype="float32")
    before = model(IDS, attention_mask=MASK).detach()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = add_lora(model, LoRASettings(rank=4, alpha=8, roles=ALL_ROLES))
    assert torch.equal(model(IDS, attention_mask=MASK).detach(), before)  # exactly: B starts at zero
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(IDS, attention_mask=MASK).float().logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(model(IDS, attention_mask=MASK).detach(), before)
    after = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # the base did not move


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_our_adapters_load_into_peft_with_the_same_logits(tiny, family, tmp_path):
    from peft import PeftModel

    hf, folder = tiny[family]
    model, _ = load(folder, dtype="float32")
    add_lora(model, LoRASettings(rank=4, alpha=8, roles=ALL_ROLES))
    randomize_adapters(model)
    write_adapter(model, tmp_path, str(folder))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["base_model_name_or_path"] == str(folder)
    assert sorted(config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                "v_proj"]
    peft_model = PeftModel.from_pretrained(hf, tmp_path).eval()
    with torch.no_grad():
        theirs = peft_model(IDS, attention_mask=MASK).logits
        ours = model(IDS, attention_mask=MASK)
    real = MASK.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    peft_model.unload()  # give the module its plain layers back for the other tests


def test_peft_adapters_load_into_lucidlm_with_the_same_logits(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    hf, folder = tiny["llama"]
    hf = type(hf).from_pretrained(folder).eval()
    peft_model = get_peft_model(hf, LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                    "down_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft_model.save_pretrained(tmp_path)
    peft_model.eval()
    ours, _ = load(tmp_path, dtype="float32")  # the folder names its base model
    assert len(lora_layers(ours)) == 2 * 2  # qkv and down in each of 2 layers
    with torch.no_grad():
        theirs = peft_model(IDS, attention_mask=MASK).logits
        mine = ours(IDS, attention_mask=MASK)
    torch.testing.assert_close(mine[MASK.bool()], theirs[MASK.bool()], atol=1e-5, rtol=1e-5)


def test_the_fused_adapter_path_equals_the_plain_one(tiny):
    model, _ = load(tiny["llama"][1], dtype="float32")
    add_lora(model, LoRASettings(rank=3, roles=("q", "v", "up", "down")))  # k and gate left out: zero rows
    randomize_adapters(model)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            x = torch.randn(2, 5, layer.in_features)
            torch.testing.assert_close(layer(x), layer.base(x) + layer.delta(x), atol=1e-5, rtol=1e-5)
            assert layer.delta(x).abs().max() > 0.1  # the adapters do add something


def test_generation_sees_adapters_that_change_between_calls(tiny):
    model, _ = load(tiny["llama"][1], dtype="float32")
    add_lora(model, LoRASettings(rank=2, roles=("q", "v")))
    with torch.no_grad():
        before = model(IDS)  # the layers keep their stacked adapters while no gradient is asked for
        randomize_adapters(model)
        after = model(IDS)
        merge_lora(model)
        torch.testing.assert_close(after, model(IDS), atol=1e-5, rtol=1e-5)
    assert not torch.equal(before, after)


def test_merged_adapters_equal_the_unmerged_model(tiny):
    model, _ = load(tiny["qwen2"][1], dtype="float32")
    add_lora(model, LoRASettings(rank=4, alpha=8, roles=ALL_ROLES))
    randomize_adapters(model)
    with torch.no_grad():
        unmerged = model(IDS, attention_mask=MASK)
        merge_lora(model)
        merged = model(IDS, attention_mask=MASK)
    assert not lora_layers(model)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_a_gpt2_keeps_per_part_adapters_under_our_names(hf_models, tmp_path):
    model, _ = load(hf_models["gpt2"][1], dtype="float32")  # its HF layout fuses q, k and v in c_attn
    add_lora(model, LoRASettings(rank=2, roles=("q", "v", "up")))
    randomize_adapters(model)
    (tmp_path / "adapter").mkdir()
    write_adapter(model, tmp_path / "adapter", str(hf_models["gpt2"][1]))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert "base_model.model.blocks.0.attn.qkv.q.lora_A.weight" in f.keys()  # ours, not c_attn's
    reloaded, _ = load(tmp_path / "adapter", dtype="float32")
    with torch.no_grad():
        assert torch.equal(reloaded(IDS % 96), model(IDS % 96))


def test_an_export_of_an_adapted_model_holds_the_fine_tuned_weights(tiny, tmp_path):
    import transformers

    from lucidlm.weights import export_hf

    model, _ = load(tiny["qwen2"][1], dtype="float32")
    add_lora(model, LoRASettings(rank=4, roles=ALL_ROLES))
    randomize_adapters(model)
    export_hf(model, None, tmp_path / "export")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), theirs(IDS).logits, atol=1e-4, rtol=1e-4)


def test_bad_lora_settings_and_adapters_are_clear_errors(tiny, tmp_path):
    model, _ = load(tiny["llama"][1], dtype="float32")
    with pytest.raises(LucidError, match="unknown LoRA target"):
        add_lora(model, LoRASettings(roles=("qkv",)))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                              "use_dora": True,
                                                              "base_model_name_or_path": str(tiny["llama"][1])}))
    with pytest.raises(LucidError, match="use_dora"):
        load(tmp_path, dtype="float32")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3",
                                                              "base_model_name_or_path": str(tiny["llama"][1])}))
    with pytest.raises(LucidError, match="of type IA3; lucidlm reads LoRA adapters only"):
        load(tmp_path, dtype="float32")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                              "base_model_name_or_path": "/moved/away/model"}))
    with pytest.raises(LucidError, match="adapter_config.json names the base model /moved/away/model, which cannot"):
        load(tmp_path, dtype="float32")


# --- lucidlm finetune ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny Llama with a 300-token BPE that knows ChatML's markers, and chat data for it."""
    folder = tmp_path_factory.mktemp("chat-model")
    text = " ".join(r["instruction"] + " " + r["output"] for r in instruction_records()[0])
    tokenizer = Tokenizer.train(text, 298, special_tokens=("<|im_start|>", "<|im_end|>"), eos_token="<|im_end|>")
    make_tiny_hf_model("llama", vocab_size=tokenizer.vocab_size).save_pretrained(folder)
    tokenizer.save(folder)
    data = folder.parent / "chat.jsonl"
    train, held = instruction_records()
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                                     {"role": "assistant", "content": r["output"]}]}) + "\n"
                            for r in train[:40]))
    return folder, data


def finetune(*argv) -> int:
    return main(["finetune", *argv, "--threads", "2", "--no-plot", "--sample-tokens", "4"])


def test_finetune_lora_writes_peft_adapters_that_peft_loads(chat_model, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, data = chat_model
    run = tmp_path / "run"
    assert finetune("--model", str(folder), "--data", str(data), "--lora", "--rank", "4", "--lora-targets",
                    *ALL_ROLES, "--max-iters", "6", "--eval-interval", "3", "--batch-size", "4", "--learning-rate",
                    "1e-2", "--out", str(run)) == 0
    err = capsys.readouterr().err
    assert "LoRA: rank 4" in err and "40 examples (36 train, 4 held out)" in err and "done: 6 steps" in err
    checkpoint = run / "checkpoints" / "step-0000006"
    assert sorted(p.name for p in checkpoint.iterdir() if p.suffix != ".vocab") == [
        "adapter_config.json", "adapter_model.safetensors", "lucidlm-tokenizer.json", "lucidlm.json", "trainer.pt"]
    ours, _ = load(checkpoint, dtype="float32")
    base, _ = load(folder, dtype="float32")
    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), checkpoint).eval()
    ids = torch.tensor([[3, 50, 120, 7, 201, 9]])
    with torch.no_grad():
        trained, reference, untouched = ours(ids), hf(ids).logits, base(ids)
    torch.testing.assert_close(trained, reference, atol=1e-5, rtol=1e-5)
    assert (trained - untouched).abs().max() > 1e-3  # the adapters learned something


def test_finetune_resume_continues_exactly_and_merge_folds_the_adapters(chat_model, tmp_path, capsys):
    folder, data = chat_model
    common = ["--model", str(folder), "--data", str(data), "--lora", "--lora-dropout", "0.1", "--dropout", "0.1",
              "--batch-size", "4",
              "--eval-interval", "2", "--checkpoint-interval", "2", "--learning-rate", "1e-2", "--warmup-iters", "1"]
    assert finetune(*common, "--max-iters", "4", "--out", str(tmp_path / "straight")) == 0
    assert finetune(*common, "--max-iters", "2", "--out", str(tmp_path / "split")) == 0
    assert finetune("--resume", str(tmp_path / "split"), "--max-iters", "4") == 0

    def losses(run):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]

    assert losses(tmp_path / "split") == losses(tmp_path / "straight")  # exactly
    assert finetune("--merge", str(tmp_path / "straight"), "--out", str(tmp_path / "merged")) == 0
    assert "chat with it: lucidlm chat --model" in capsys.readouterr().out
    adapted, _ = load(tmp_path / "straight", dtype="float32")
    merged, _ = load(tmp_path / "merged", dtype="float32")
    assert not lora_layers(merged) and lora_layers(adapted)
    ids = torch.tensor([[3, 50, 120, 7, 201, 9]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), adapted(ids), atol=1e-5, rtol=1e-5)
    assert finetune("--merge", str(tmp_path / "straight"), "--out", str(tmp_path / "merged")) == 2  # not over it
    assert finetune("--merge", str(tmp_path / "merged"), "--out", str(tmp_path / "again")) == 2
    assert "has no LoRA adapters to merge" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--lora", "--lora-targets", "qkv"], "lora_targets: must name some of q, k, v, o, gate, up, down"),
    (["--lora", "--rank", "0"], "rank: must be at least 1"),
    (["--model", "no/such/model/here"], "no/such/model/here"),
    (["--resume", "RUN", "--model", "x"], "a resumed run keeps the base model it started from"),
])
def test_finetune_mistakes_are_one_line_errors(chat_model, tmp_path, capsys, argv, message):
    folder, data = chat_model
    model = [] if "--model" in argv else ["--model", str(folder)]
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    assert finetune(*model, "--data", str(data), "--out", str(tmp_path / "run"), *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_plain_text_and_train_on_prompt_runs_sample_what_they_can(chat_model, tmp_path, capsys):
    folder, data = chat_model
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": r["instruction"] + " " + r["output"]}) + "\n"
                             for r in instruction_records()[0][:20]))
    for records, extra in ((texts, []), (data, ["--train-on-prompt"])):
        assert finetune("--model", str(folder), "--data", str(records), "--max-iters", "2", "--eval-interval", "2",
                        "--batch-size", "4", "--lora", "--out", str(tmp_path / records.stem), *extra) == 0
    err = capsys.readouterr().err
    assert err.count("done: 2 steps") == 2 and err.count("sample: ") == 2  # the chat run's two evaluations


def test_full_finetuning_without_lora_writes_a_whole_model(chat_model, tmp_path):
    folder, data = chat_model
    assert finetune("--model", str(folder), "--data", str(data), "--max-iters", "2", "--batch-size", "4",
                    "--learning-rate", "1e-3", "--out", str(tmp_path / "run")) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000002"
    assert (checkpoint / "model.safetensors").exists() and not (checkpoint / "adapter_config.json").exists()


@pytest.mark.slow
def test_lora_finetuning_in_two_processes_equals_one(chat_model, tmp_path):
    folder, data = chat_model
    argv = ["--objective", "sft", "--init-from", str(folder), "--data", str(data), "--lora", "--max-iters", "3",
            "--eval-interval", "3", "--learning-rate", "1e-2", "--sample-tokens", "0", "--no-plot", "--threads", "1",
            "--autocast", "off"]
    one, two = train_in_one_and_two_processes(argv, tmp_path)
    read = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in read(one)] == [r["step"] for r in read(two)] == [0, 1, 2, 3]
    for a, b in zip(read(one), read(two)):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)


def test_adapters_on_the_quantized_default_model_add_what_they_add_in_float32(smollm_path, tmp_path):
    dense, tokenizer = load(smollm_path, dtype="float32")
    ids = torch.tensor([tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        dense_base = dense(ids)
    torch.manual_seed(0)
    add_lora(dense, LoRASettings(rank=4, roles=("q", "v", "down")))
    randomize_adapters(dense)
    write_adapter(dense, tmp_path, str(smollm_path))
    quantized, _ = load(tmp_path)  # dtype auto: the file's Q4_1 matrices under the adapters
    assert type(lora_layers(quantized)["blocks.0.attn.qkv"].base).__name__ == "QuantizedLinear"
    base, _ = load(smollm_path)
    with torch.no_grad():
        dense_adapted, quantized_adapted, quantized_base = dense(ids), quantized(ids), base(ids)
    kernels = (quantized_base - dense_base).norm()  # the bf16 kernels' own error, without adapters
    # measured: kernels 80, adapted 145, the adapters' effect 3865 (dropping them would miss by that)
    assert (dense_adapted - dense_base).norm() > 20 * kernels
    assert (quantized_adapted - dense_adapted).norm() <= 3 * kernels  # the kernels' error, in a model the adapters moved


def test_right_padded_batches_give_the_same_logits_without_a_mask(tiny):
    """InstructionTuning.loss leaves the attention mask out: padding on the right is after every real
    token, so the causal mask alone keeps it out of their view."""
    model, _ = load(tiny["llama"][1], dtype="float32")
    ids = torch.tensor([[5, 17, 3, 44, 90, 12], [2, 9, 31, 0, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask)[mask.bool()], model(ids)[mask.bool()])


def test_sft_computes_the_rows_common_beginning_once_with_the_same_loss_and_gradients(chat_model, monkeypatch):
    """InstructionTuning.loss packs a batch around what its rows share (the chat template's opening);
    the loss and the adapters' gradients are those of every row computed whole."""
    from types import SimpleNamespace

    from lucidlm.train import instruction_tuning
    from lucidlm.train.instruction_tuning import Examples, InstructionTuning

    folder, data = chat_model
    model, tokenizer = load(folder, dtype="float32")
    add_lora(model, LoRASettings(rank=4, alpha=8, roles=ALL_ROLES))
    randomize_adapters(model)
    objective = InstructionTuning(tokenizer, SimpleNamespace(prompt_format="chat", train_on_prompt=False))
    examples = [objective.renderer.render(json.loads(line), "test") for line in data.read_text().splitlines()[:4]]
    batch = Examples(examples, objective).batch(torch.arange(4), torch.Generator(), slice(None))
    shared = instruction_tuning.prefix_to_share(model, batch["inputs"])
    assert shared > 0 and tokenizer.decode(batch["inputs"][0, :shared].tolist()).startswith("<|im_start|>user\n")

    def loss_and_gradients():
        model.zero_grad(set_to_none=True)
        loss = objective.loss(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    packed_loss, packed_grads = loss_and_gradients()
    monkeypatch.setattr(instruction_tuning, "prefix_to_share", lambda model, ids: 0)
    plain_loss, plain_grads = loss_and_gradients()
    torch.testing.assert_close(packed_loss, plain_loss, atol=1e-6, rtol=1e-5)
    for packed, plain in zip(packed_grads, plain_grads):
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-4)
