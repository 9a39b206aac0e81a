"""The bad-input matrix, config part: YAML that attacks (alias bombs, repeated keys), numbers that
pass a type check and break things (infinities, huge sizes and seeds, vanishing temperatures),
and config paths that are not a UTF-8 YAML file (binary, UTF-16, a directory, a symlink loop).

Each case gets a non-zero exit, one message naming the file, line or field, and no change on
disk (by hash); the alias bombs are also refused within seconds.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from conftest import MATRIX_TINY as TINY
from conftest import Case, assert_refused, budget
from safetensors.torch import load, save

from jumok.app.cli import main
from jumok.config import Config, load_config
from jumok.config.strict_yaml import MAX_ALIAS_VALUES

BIG = 1180591620717411303424  # 2**70


# ----------------------------------------------------------------------------------- helpers
def config_bytes(payload: bytes, name: str = "bad.yaml"):
    def make(w: Path) -> list[str]:
        (w / name).write_bytes(payload)
        return ["train", str(w / name), "--run-dir", str(w / "new")]

    return make


def config(text: str, name: str = "bad.yaml"):
    return config_bytes(text.encode("utf-8"), name)


def tiny_with(old: str, new: str):
    assert old in TINY, old
    return config(TINY.replace(old, new))


def tiny_plus(extra: str):
    return config(TINY + extra)


def billion_laughs(levels: int = 9, indent: str = "") -> str:
    """The classic bomb: each level is a list of nine aliases of the level before (9^9 values)."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 9) -> str:
    """The same bomb as one flow value, for ``--set``."""
    items = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    items += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(items)}]"


def train_set(value: str):
    def make(w: Path) -> list[str]:
        return ["train", str(w / "tiny.yaml"), "--set", value, "--run-dir", str(w / "new")]

    return make


def translate(*flags: str):
    def make(w: Path) -> list[str]:
        (w / "in.txt").write_text("Jan 2, 2003\n", encoding="utf-8")
        return ["translate", str(w / "run"), "--input", str(w / "in.txt"), *flags]

    return make


def with_embedded_config(text: str):
    """A run folder 'broken' whose checkpoint is the good one with ``text`` as its config (and
    its checksum recomputed, as someone who crafts a checkpoint would)."""

    def make(w: Path) -> list[str]:
        payload = (w / "run" / "best.safetensors").read_bytes()
        size = struct.unpack("<Q", payload[:8])[0]
        metadata = json.loads(payload[8 : 8 + size])["__metadata__"]
        metadata["config"] = text
        tensors = load(payload)
        if "sha256" in metadata:
            from jumok.checkpoint import checkpoint_digest

            metadata["sha256"] = checkpoint_digest(tensors, metadata)
        (w / "broken").mkdir()
        (w / "broken" / "best.safetensors").write_bytes(save(tensors, metadata=metadata))
        (w / "in.txt").write_text("Jan 2, 2003\n", encoding="utf-8")
        return ["translate", str(w / "broken"), "--input", str(w / "in.txt")]

    return make


def directory(w: Path) -> list[str]:
    (w / "conf.yaml").mkdir()
    return ["train", str(w / "conf.yaml"), "--run-dir", str(w / "new")]


def symlink_loop(w: Path) -> list[str]:
    os.symlink(w / "b.yaml", w / "a.yaml")
    os.symlink(w / "a.yaml", w / "b.yaml")
    return ["train", str(w / "a.yaml"), "--run-dir", str(w / "new")]


def dangling_symlink(w: Path) -> list[str]:
    os.symlink(w / "gone.yaml", w / "link.yaml")
    return ["train", str(w / "link.yaml"), "--run-dir", str(w / "new")]


ENCODER = "encoder: {embedding_size: 8, hidden_size: 16}"

BOMBS = [
    Case("alias bomb", config(billion_laughs()), ("bad.yaml:", "alias bomb")),
    Case(
        "alias bomb in a checkpoint's config",
        with_embedded_config(TINY + "extra:\n" + billion_laughs(indent="  ")),
        ("best.safetensors (embedded config):", "alias bomb"),
    ),
    Case("alias bomb in --set", train_set(f"model.x={flow_bomb()}"), ("--set", "alias bomb")),
]

CASES = [
    # ------------------------------------------------------------------ YAML that attacks
    Case(
        "duplicate top-level key",
        tiny_plus("model: {attention: general}\n"),
        ("bad.yaml:9", "duplicate key 'model'", "first at line 4"),
    ),
    Case(
        "duplicate nested key",
        tiny_with("batch_size: 4}", "batch_size: 4, epochs: 3}"),
        ("bad.yaml:8", "duplicate key 'epochs'", "first at line 8"),
    ),
    Case(
        "duplicate key in --set",
        train_set("model.encoder={hidden_size: 16, hidden_size: 32}"),
        ("--set", "duplicate key 'hidden_size'"),
    ),
    Case(
        "alias inside its own value",
        tiny_plus("x: &loop [1, *loop]\n"),
        ("bad.yaml:9", "*loop", "loop"),
    ),
    Case("control character", tiny_plus("x: a\x07b\n"), ("bad.yaml:9", "U+0007")),
    Case(
        "nested too deeply",
        tiny_plus("x: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("bad.yaml", "too deeply"),
    ),
    Case(
        "config too big",
        tiny_plus("# " + "x" * 300_000 + "\n"),
        ("bad.yaml", "at most", "data file"),
    ),
    # --------------------------------------------------------- numbers that break things
    Case("lr .inf", tiny_with("epochs: 1", "epochs: 1, lr: .inf"), ("train.lr", "finite")),
    Case("lr .nan", tiny_with("epochs: 1", "epochs: 1, lr: .nan"), ("train.lr", "finite")),
    Case("decode.alpha .inf", tiny_plus("decode: {alpha: .inf}\n"), ("decode.alpha",)),
    Case("coverage penalty .nan", tiny_plus("decode: {coverage_penalty: .nan}\n"), ("coverage",)),
    Case(
        "min_length_ratio 1e300",
        tiny_plus("decode: {min_length_ratio: 1.0e+300}\n"),
        ("decode.min_length_ratio", "100"),
    ),
    Case(
        "temperature 1e-45",
        tiny_plus("decode: {sample: true, temperature: 1.0e-45}\n"),
        ("decode.temperature", "0.0001"),
    ),
    Case("decode.seed 2**70", tiny_plus(f"decode: {{seed: {BIG}}}\n"), ("decode.seed", str(BIG))),
    Case("train.seed 2**70", tiny_with("epochs: 1", f"epochs: 1, seed: {BIG}"), ("train.seed",)),
    Case("negative seed", tiny_with("epochs: 1", "epochs: 1, seed: -1"), ("train.seed",)),
    Case(
        "hidden size 10^9",
        tiny_with(ENCODER, "encoder: {embedding_size: 8, hidden_size: 1000000000}"),
        ("model.encoder.hidden_size", "16384"),
    ),
    Case(
        "hidden size 10^5",
        tiny_with(ENCODER, "encoder: {embedding_size: 8, hidden_size: 100000}"),
        ("model.encoder.hidden_size", "16384"),
    ),
    Case(
        "embedding size 10^6",
        tiny_with(ENCODER, "encoder: {embedding_size: 1000000, hidden_size: 16}"),
        ("model.encoder.embedding_size", "16384"),
    ),
    Case(
        "hidden size 1e300",
        tiny_with(ENCODER, "encoder: {embedding_size: 8, hidden_size: 1.0e+300}"),
        ("model.encoder.hidden_size",),
    ),
    Case(
        "generated pairs 10^12",
        config("data:\n  generate: {size: 1000000000000}\n"),
        ("data.generate.size",),
    ),
    Case("--set lr=.inf", train_set("train.lr=.inf"), ("train.lr", "finite")),
    # ------------------------------------------------ the same numbers as translate flags
    Case(
        "--temperature 1e-45",
        translate("--sample", "--temperature", "1e-45"),
        ("decode.temperature",),
    ),
    Case("--seed 2**70", translate("--sample", "--seed", str(BIG)), ("decode.seed",)),
    Case("--alpha inf", translate("--beam", "2", "--alpha", "inf"), ("decode.alpha",)),
    Case("--coverage-penalty nan", translate("--coverage-penalty", "nan"), ("coverage_penalty",)),
    Case("--min-length-ratio 1e300", translate("--min-length-ratio", "1e300"), ("min_length",)),
    # --------------------------------------------------- a config that is not a YAML file
    Case(
        "binary config",
        config_bytes(bytes(range(256)) * 4),
        ("bad.yaml:1", "binary", "UTF-8 YAML text"),
    ),
    Case(
        "UTF-16 config",
        config_bytes(TINY.encode("utf-16")),
        ("bad.yaml", "UTF-16", "UTF-8 YAML text"),
    ),
    Case(
        "Latin-1 config",
        config_bytes(TINY.encode() + "# café\n".encode("latin-1")),
        ("bad.yaml:9", "0xe9", "UTF-8"),
    ),
    Case("config is a directory", directory, ("conf.yaml", "is a directory")),
    Case("config is a symlink loop", symlink_loop, ("a.yaml", "loop of symbolic links")),
    Case("config is a dangling symlink", dangling_symlink, ("link.yaml", "not found", "link")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_config_gets_one_clear_message_and_changes_nothing(case, work, capsys):
    assert_refused(case, work, capsys)


@pytest.mark.parametrize("case", BOMBS, ids=[c.name for c in BOMBS])
def test_alias_bombs_are_refused_within_seconds(case, work, capsys):
    started = time.perf_counter()
    assert_refused(case, work, capsys)
    assert time.perf_counter() - started < budget(5)


# --------------------------------------------------------------------------- accepted inputs
def test_modest_anchors_aliases_and_merges_still_load(tmp_path):
    (tmp_path / "pairs.tsv").write_text("a\tb\n" * 4, encoding="utf-8")
    (tmp_path / "ok.yaml").write_text(
        "data: {train: pairs.tsv, dev_size: 1}\n"
        "model:\n"
        "  encoder: &side {embedding_size: 8, hidden_size: 16}\n"
        "  decoder: {<<: *side, embedding_size: 4}\n"
        "train: &train {epochs: 1, batch_size: 4}\n",
        encoding="utf-8",
    )
    cfg = load_config(tmp_path / "ok.yaml", ["train.max_steps=3"])
    assert cfg.model.encoder.hidden_size == cfg.model.decoder.hidden_size == 16
    assert cfg.model.decoder.embedding_size == 4  # a merged key may be overridden
    assert cfg.train.epochs == 1 and cfg.train.max_steps == 3


def test_aliases_up_to_the_limit_load(tmp_path):
    # One anchored list aliased until the aliases stand for just under the limit.
    per_alias = 101  # the list and its 100 values
    count = MAX_ALIAS_VALUES // per_alias
    text = (
        f"data: {{generate: {{size: 100, dev_size: 10, test_size: 10}}}}\n"
        f"x: &x [{', '.join(['1'] * 100)}]\n"
        f"y: [{', '.join(['*x'] * count)}]\n"
    )
    (tmp_path / "ok.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(Exception, match="unknown field"):  # read, then refused by the schema
        load_config(tmp_path / "ok.yaml")


def test_the_bounds_themselves_are_accepted():
    cfg = Config.model_validate(
        {
            "data": {"generate": {"size": 10_000_000, "seed": 2**32 - 1}},
            "model": {
                "encoder": {"embedding_size": 16384, "hidden_size": 16384},
                "decoder": {"embedding_size": 16384, "hidden_size": 16384},
            },
            "train": {"seed": 2**32 - 1, "lr": 10},
            "decode": {"temperature": 1e-4, "seed": 2**32 - 1, "min_length_ratio": 100},
        }
    )
    assert cfg.train.seed == cfg.decode.seed == 2**32 - 1


def test_the_smallest_temperature_and_largest_seed_sample(work, capsys):
    (work / "in.txt").write_text("Jan 2, 2003\nMar 3, 1999\n", encoding="utf-8")
    argv = ["translate", str(work / "run"), "--input", str(work / "in.txt"), "--sample"]
    assert main([*argv, "--temperature", "1e-4", "--seed", str(2**32 - 1), "--n-best", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 2


def test_bom_is_still_read(tmp_path):
    (tmp_path / "pairs.tsv").write_text("a\tb\n" * 4, encoding="utf-8")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert load_config(tmp_path / "bom.yaml").train.batch_size == 4
