"""GenerationSettings: every value checked once, where settings are made (the Python API, the CLI
flags and the chat's /set), and the flags generated from its fields."""

import math

import pytest

from lucidlm import GenerationSettings, make_logits_processors, make_sampler
from lucidlm.cli import main
from lucidlm.errors import LucidError, SettingError


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", math.nan), ("temperature", math.inf), ("temperature", 1e-45),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True), ("top_p", 0.0), ("top_p", 1.5), ("top_p", math.nan),
    ("min_p", -0.1), ("min_p", 2.0), ("repetition_penalty", 0.0), ("repetition_penalty", math.nan),
    ("presence_penalty", math.inf), ("presence_penalty", 10 ** 400), ("frequency_penalty", -math.inf),
    ("frequency_penalty", math.nan),
    ("penalty_window", 0), ("logit_bias", {3: math.nan}), ("logit_bias", {3: math.inf}), ("logit_bias", {-1: 1.0}),
    ("logit_bias", {"3": 1.0}), ("max_tokens", 0), ("max_tokens", True), ("max_tokens", 2.0), ("stop", ("",)),
    ("seed", -1), ("seed", 2 ** 64), ("seed", 1.5), ("overflow", "wrap"),
])
def test_every_bad_value_is_refused_with_its_name(field, value):
    with pytest.raises(SettingError) as info:
        GenerationSettings(**{field: value})
    assert info.value.field == field and "\n" not in str(info.value)
    with pytest.raises(SettingError):
        GenerationSettings().replace(**{field: value})


def test_good_values_pass_and_build_the_pieces():
    s = GenerationSettings(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1,
                           presence_penalty=-0.5, frequency_penalty=0.2, logit_bias={5: -math.inf, 7: 2},
                           max_tokens=10, stop="###", seed=2 ** 64 - 1, overflow="shift")
    assert s.stop == ("###",)
    assert len(s.logits_processors()) == 3 and callable(s.sampler()) and s.generator() is not None
    assert GenerationSettings.from_dict(s.to_dict()) == s
    with pytest.raises(LucidError, match="unknown generation setting"):
        GenerationSettings.from_dict({"temprature": 1.0})


def test_the_mlx_style_builders_check_through_the_settings():
    with pytest.raises(LucidError, match="temperature"):
        make_sampler(temp=math.nan)
    with pytest.raises(LucidError, match="repetition_penalty"):
        make_logits_processors(repetition_penalty=0.0)
    assert make_logits_processors(repetition_penalty=1.0) == []


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_every_field_is_a_flag_of_generate_with_its_help(capsys):
    import dataclasses

    code, out, _ = run(capsys, "generate", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for f in dataclasses.fields(GenerationSettings):
        flag = "--temp" if f.name == "temperature" else "--" + f.name.replace("_", "-")
        assert flag in out, flag
        assert " ".join(f.metadata["help"].split()) in flat, f.name


@pytest.mark.parametrize("argv, flag", [
    (["--presence-penalty", "inf"], "--presence-penalty"), (["--repetition-penalty", "nan"], "--repetition-penalty"),
    (["--temp", "1e-45"], "--temp"), (["--seed", str(2 ** 64)], "--seed"), (["--logit-bias", "5=nan"], "--logit-bias"),
    (["--overflow", "wrap"], "--overflow"), (["--stop", ""], "--stop"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(capsys, argv, flag):
    code, _, err = run(capsys, "generate", "--prompt", "hi", *argv)
    assert code == 2 and err.startswith(f"lucidlm: error: {flag}: ") and err.count("\n") == 1, err
