"""Config loading: typed fields, overrides, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jumok.config import Config, config_from_yaml, config_to_yaml, load_config
from jumok.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_with_the_books_settings():
    cfg = load_config(ROOT / "examples/date.yaml")
    assert cfg.model.encoder.embedding_size == 16 and cfg.model.encoder.hidden_size == 256
    assert cfg.train.batch_size == 128 and cfg.train.lr == 1e-3
    assert cfg.data.reverse_source is True and cfg.model.attention == "dot"


def test_a_typo_names_file_key_and_suggestion(tmp_path):
    path = write(
        tmp_path, "data:\n  generate: {task: date}\nmodel:\n  encoder:\n    hiden_size: 8\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "model.encoder.hiden_size" in message
    assert "did you mean hidden_size?" in message


def test_wrong_type_and_bad_choice(tmp_path):
    path = write(tmp_path, "data:\n  generate: {task: date}\ntrain:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer"):
        load_config(path)
    path = write(tmp_path, "data:\n  generate: {task: calendar}\n")
    with pytest.raises(ConfigError, match=r"data\.generate\.task: .*'date' or 'addition'"):
        load_config(path)


def test_zero_or_negative_sizes_are_rejected(tmp_path):
    path = write(tmp_path, "data:\n  generate: {task: date}\n")
    with pytest.raises(ConfigError, match=r"model\.encoder\.hidden_size: .*greater than 0"):
        load_config(path, ["model.encoder.hidden_size=0"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "data:\n  generate: {task: date\ntrain: {}\n")
    with pytest.raises(ConfigError, match=rf"{path.name}:\d+:\d+: YAML syntax error"):
        load_config(path)


def test_overrides_use_dotted_paths_and_yaml_values(tmp_path):
    path = write(tmp_path, "data:\n  generate: {task: date}\n")
    cfg = load_config(
        path,
        [
            "train.lr=3e-4",
            "train.clip_grad_norm=null",
            "data.generate.size=900",
            "data.generate.dev_size=100",
            "data.generate.test_size=100",
        ],
    )
    assert cfg.train.lr == 3e-4 and cfg.train.clip_grad_norm is None
    assert cfg.data.generate.size == 900
    with pytest.raises(
        ConfigError, match=r"--set train\.lrr=1: train\.lrr: unknown field \(did you mean lr\?\)"
    ):
        load_config(path, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["train.lr"])


def test_incompatible_sizes_say_what_to_change(tmp_path):
    path = write(tmp_path, "data:\n  generate: {task: date}\n")
    with pytest.raises(
        ConfigError,
        match=r"run\.yaml: model: dot attention .*decoder\.hidden_size = 128\) with each row of "
        r"hs \(encoder size 256\).*set model\.decoder\.hidden_size to 256",
    ):
        load_config(path, ["model.decoder.hidden_size=128"])


def test_data_source_is_required_and_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="data: missing section; give data.generate"):
        load_config(write(tmp_path, "train: {epochs: 1}\n"))
    with pytest.raises(ConfigError, match="give either data.generate"):
        load_config(write(tmp_path, "data: {reverse_source: true}\n"))
    with pytest.raises(
        ConfigError, match=r"dev_size \+ test_size \(1000 \+ 5000\) must be smaller"
    ):
        load_config(write(tmp_path, "data:\n  generate: {size: 900}\n"))
    with pytest.raises(ConfigError, match="alternatives"):
        load_config(write(tmp_path, "data:\n  generate: {task: date}\n  train: pairs.tsv\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_data_paths_resolve_against_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", "data:\n  train: pairs.tsv\n")
    assert load_config(path).data.train == (tmp_path / "sub" / "pairs.tsv").resolve()


def test_yaml_round_trip_is_identical():
    cfg = load_config(ROOT / "examples/date.yaml", ["train.epochs=2"])
    again = config_from_yaml(config_to_yaml(cfg), "x")
    assert again == cfg and isinstance(again, Config)


def test_configs_are_frozen():
    cfg = load_config(ROOT / "examples/date.yaml")
    with pytest.raises(ValidationError):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.encoder.bidirectional=true"],
            "dot attention compares the decoder state (decoder.hidden_size = 256) with each row "
            "of hs (encoder size 256 x 2 directions = 512)",
        ),
        (
            ["model.encoder.bidirectional=true", "model.attention=general"],
            "model.decoder.init 'last' starts the decoder from the encoder's final state (size "
            "256 x 2 directions = 512), which does not fit decoder.hidden_size (256): set "
            "model.decoder.hidden_size to 512, or use model.decoder.init: bridge",
        ),
        (
            ["model.encoder.num_layers=2"],
            "but the encoder has 2 layer(s) and the decoder 1",
        ),
        (
            ["model.attention=none", "model.decoder.input_feeding=true"],
            "model.decoder.input_feeding feeds the attentional vector back, and model.attention "
            "is 'none'",
        ),
        (
            ["model.decoder.tie_embeddings=true"],
            "(decoder.embedding_size = 16) with the output layer, which reads vectors of "
            "decoder.hidden_size = 256",
        ),
        (
            ["model.attention=none", "model.decoder.init=zero"],
            "model.decoder.init 'zero' with peeky false gives it neither",
        ),
        (["model.dropout.layers=1.5"], "model.dropout.layers"),
        (["model.encoder.rnn=rnn"], "model.encoder.rnn"),
        (["model.decoder.init=first"], "model.decoder.init"),
    ],
)
def test_combinations_that_cannot_work_fail_at_config_time(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "examples/date.yaml", overrides)
    assert message in str(err.value)


def test_valid_combinations_pass():
    cfg = load_config(
        ROOT / "examples/date.yaml",
        [
            "model.encoder.bidirectional=true",
            "model.encoder.hidden_size=128",
            "model.encoder.num_layers=2",
            "model.decoder.num_layers=2",
            "model.decoder.input_feeding=true",
        ],
    )
    assert cfg.model.encoder.output_size == 256 == cfg.model.decoder.hidden_size
