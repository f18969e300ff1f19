import pytest

from lucidlm import Config, PRESETS
from lucidlm.errors import ConfigError


def test_defaults_resolve_to_concrete_sizes():
    c = Config(d_model=64, n_heads=4)
    assert (c.n_kv_heads, c.head_dim, c.d_ff) == (4, 16, 256)


@pytest.mark.parametrize("field, value", [
    ("n_heads", 0), ("norm", "batchnorm"), ("activation", "tanh"), ("position", "alibi"),
    ("dropout", 1.5), ("norm_eps", -1.0), ("rope_scaling", "yarn"), ("vocab_size", 2.5),
    ("sliding_window", 0), ("causal", "yes"),
])
def test_validation_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"Config\.{field}"):
        Config(**{field: value})


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError, match="n_kv_heads"):
        Config(n_heads=8, n_kv_heads=3)


def test_sliding_window_layers_need_a_window():
    with pytest.raises(ConfigError, match="sliding_window_layers"):
        Config(n_layers=2, sliding_window_layers=(0,))


def test_round_trip_through_dict_and_unknown_fields_refused():
    c = Config(n_layers=3, sliding_window=8, sliding_window_layers=(0, 2))
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown field"):
        Config.from_dict({**c.to_dict(), "model_name": "gpt"})


def test_config_is_frozen():
    with pytest.raises(Exception):
        Config().n_layers = 3


def test_no_field_names_a_model():
    names = " ".join(Config.__dataclass_fields__)
    for family in ("gpt", "llama", "qwen", "mistral", "gemma", "bert", "smol"):
        assert family not in names


def test_presets_are_valid_configs():
    assert PRESETS["shakespeare-char"].n_layers == 4 and PRESETS["shakespeare-char"].d_model == 128
