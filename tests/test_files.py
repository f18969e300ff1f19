"""Hugging Face folders and our checkpoint format: round trips, hub ids through a mocked download,
and a clear error for every bad file."""

import json

import pytest
import torch

import lucidlm
from lucidlm.errors import FormatError, LucidError

from conftest import make_tiny_hf_model


@pytest.fixture
def folder(tmp_path):
    make_tiny_hf_model("llama").save_pretrained(tmp_path / "m")
    return tmp_path / "m"


@torch.no_grad()
def test_our_checkpoint_format_round_trips(folder, tmp_path, shakespeare):
    model, _ = lucidlm.load(folder)
    tokenizer = lucidlm.Tokenizer.train(shakespeare[:20000], 300, pattern="gpt2")
    lucidlm.save(model, tokenizer, tmp_path / "ours")
    assert {p.name for p in (tmp_path / "ours").iterdir()} >= {"model.safetensors", "lucidlm.json",
                                                                "lucidlm-tokenizer.json"}
    again, tok2 = lucidlm.load(tmp_path / "ours")
    ids = torch.randint(0, 96, (2, 9))
    assert torch.equal(again(ids), model(ids)) and again.config == model.config
    assert tok2.encode("To be or not") == tokenizer.encode("To be or not")


def test_a_failed_save_leaves_the_previous_folder(folder, tmp_path, monkeypatch):
    from lucidlm.weights import checkpoint

    model, _ = lucidlm.load(folder)
    lucidlm.save(model, None, tmp_path / "ours")
    before = (tmp_path / "ours" / "model.safetensors").read_bytes()
    monkeypatch.setattr(checkpoint, "write_checkpoint", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "disk full")))
    with pytest.raises(OSError):
        lucidlm.save(model, None, tmp_path / "ours")
    assert (tmp_path / "ours" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hub_ids_go_through_huggingface_hub(folder, monkeypatch):
    import huggingface_hub

    asked = {}

    def fake_snapshot(repo_id, allow_patterns=None, **kwargs):
        asked["repo"], asked["patterns"] = repo_id, allow_patterns
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    model, _ = lucidlm.load("someone/tiny-llama")
    assert asked["repo"] == "someone/tiny-llama" and "*.safetensors" in asked["patterns"]
    assert model.config.n_layers == 2


def test_an_unreachable_hub_is_a_one_line_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(LucidError, match=r"cannot get 'someone/model' from the Hugging Face hub: We couldn't connect") as info:
        lucidlm.load("someone/model")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_corrupt_safetensors_give_a_clean_error(folder, damage):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01garbage" * 100)
    else:
        path.write_bytes(b"\xff" * 8 + data[8:])  # a lying header length
    with pytest.raises(FormatError, match="safetensors"):
        lucidlm.load(folder)


def test_pickled_weights_are_refused(tmp_path, folder):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "p" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(FormatError, match="never unpickles"):
        lucidlm.load(tmp_path / "p")


def test_missing_unexpected_and_misshapen_tensors_are_named(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if k != "model.layers.1.mlp.down_proj.weight"},
              folder / "model.safetensors")
    with pytest.raises(FormatError, match=r"missing.*blocks\.1\.mlp\.down\.weight.*model\.layers\.1\.mlp\.down_proj"):
        lucidlm.load(folder)
    save_file({**tensors, "model.layers.0.self_attn.rotary.mystery": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(FormatError, match=r"unexpected.*rotary\.mystery"):
        lucidlm.load(folder)
    save_file({**tensors, "model.norm.weight": torch.ones(7)}, folder / "model.safetensors")
    with pytest.raises(FormatError, match=r"final_norm\.weight has shape \(7,\)"):
        lucidlm.load(folder)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mamba"}, "unsupported architecture 'mamba'"),
    ({"hidden_act": "swiglu_magic"}, "unsupported activation"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "unsupported rope scaling 'yarn'"),
    ({"num_attention_heads": 5}, "Config.n_kv_heads|Config"),
])
def test_bad_config_json(folder, change, message):
    data = json.loads((folder / "config.json").read_text())
    data.update(change)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(LucidError, match=message):
        lucidlm.load(folder)


def test_not_json_and_not_a_model(tmp_path, folder):
    (folder / "config.json").write_text("{broken")
    with pytest.raises(FormatError, match="not valid JSON"):
        lucidlm.load(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="not a model folder"):
        lucidlm.load(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"hello")
    with pytest.raises(FormatError, match="not a model lucidlm can load"):
        lucidlm.load(tmp_path / "x.bin")


@torch.no_grad()
def test_state_dicts_and_checkpoints_hold_the_standard_layout(folder, tmp_path):
    """Outside the linear layers every matrix is nn.Linear's (out, in) and nn.Embedding's (vocab,
    d_model): state dicts, our checkpoints, and load_state_dict going back in."""
    from safetensors.torch import load_file

    model, _ = lucidlm.load(folder)
    c = model.config
    state = model.state_dict()
    assert state["tok_emb.weight"].shape == (c.vocab_size, c.d_model)
    assert state["blocks.0.attn.qkv.weight"].shape == ((c.n_heads + 2 * c.n_kv_heads) * c.head_dim, c.d_model)
    assert state["blocks.0.mlp.down.weight"].shape == (c.d_model, c.d_ff)
    assert not any("weight_t" in name for name in state)
    hf = load_file(folder / "model.safetensors")
    torch.testing.assert_close(state["blocks.1.attn.out.weight"], hf["model.layers.1.self_attn.o_proj.weight"])
    lucidlm.save(model, None, tmp_path / "ours")
    assert load_file(tmp_path / "ours" / "model.safetensors")["blocks.0.mlp.up.weight"].shape == (2 * c.d_ff, c.d_model)
    other = lucidlm.Transformer(c)
    other.load_state_dict(state)
    ids = torch.randint(0, 96, (2, 7))
    torch.testing.assert_close(other(ids), model(ids))


@torch.no_grad()
def test_checkpoints_of_version_1_still_load(folder, tmp_path):
    """lucidlm 0.1 wrote the matrices of linear layers, the embedding and the head as (in, out)."""
    from safetensors.torch import load_file, save_file

    model, _ = lucidlm.load(folder)
    lucidlm.save(model, None, tmp_path / "old")
    info = json.loads((tmp_path / "old" / "lucidlm.json").read_text())
    assert info["version"] == 2
    tensors = load_file(tmp_path / "old" / "model.safetensors")
    legacy = {name: t.t().contiguous() if name.endswith(("qkv.weight", "out.weight", "up.weight", "down.weight",
                                                        "tok_emb.weight", "lm_head.weight")) else t
              for name, t in tensors.items()}
    save_file(legacy, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "lucidlm.json").write_text(json.dumps({**info, "version": 1}))
    again, _ = lucidlm.load(tmp_path / "old")
    ids = torch.randint(0, 96, (2, 9))
    torch.testing.assert_close(again(ids), model(ids))


@torch.no_grad()
def test_every_linear_layer_is_built_by_the_one_factory(folder, monkeypatch):
    """make_linear is the swap point: a different layer returned there runs in the model."""
    import importlib

    from lucidlm.model import Linear

    load_module = importlib.import_module("lucidlm.weights.load")  # the module, not the function it exports

    built = []

    class Doubled(Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    def make_doubled(weight, bias):
        layer = Doubled(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
        built.append(layer)
        return layer

    plain, _ = lucidlm.load(folder)
    monkeypatch.setattr(load_module, "make_linear", make_doubled)
    swapped, _ = lucidlm.load(folder)
    assert len(built) == 4 * swapped.config.n_layers  # qkv, out, up, down
    assert all(isinstance(block.attn.qkv, Doubled) for block in swapped.blocks)
    ids = torch.randint(0, 96, (1, 5))
    assert not torch.allclose(swapped(ids), plain(ids))


def test_the_kv_cache_takes_the_models_dtype_and_device(folder):
    from lucidlm.generation import make_cache

    model, _ = lucidlm.load(folder, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    cache = make_cache(model)
    assert cache.keys[0].dtype == torch.bfloat16
    model.float()
    assert make_cache(model).keys[0].dtype == torch.float32


def test_a_tokenizer_is_not_a_model(tmp_path, shakespeare):
    tokenizer = lucidlm.Tokenizer.train(shakespeare[:5000], 280, pattern="gpt2")
    tokenizer.save(tmp_path / "tok")
    with pytest.raises(FormatError, match="tokenizer, not a model"):
        lucidlm.load(tmp_path / "tok")
    assert lucidlm.Tokenizer.from_file(tmp_path / "tok").encode("To be") == tokenizer.encode("To be")


def test_a_models_own_description_file_stands_for_its_folder(folder, tmp_path):
    model, _ = lucidlm.load(folder / "config.json")
    lucidlm.save(model, None, tmp_path / "ours")
    again, _ = lucidlm.load(tmp_path / "ours" / "lucidlm.json")
    assert again.config == model.config
