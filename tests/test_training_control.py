"""Training control: token batches, gradient accumulation, validation steps, early stopping,
the k best checkpoints and the metrics files."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import QUIET, small_config, tiny_model_config

from jumok.config import TrainConfig
from jumok.data.splits import batch_order, encode_pairs, make_batch, split_by_tokens
from jumok.data.synthetic import generate
from jumok.data.vocab import Vocab, tokenize_chars
from jumok.model.seq2seq import build_model
from jumok.training.train import accumulated_update, make_optimizer, train


def test_token_batches_hold_every_example_once_within_the_budget():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 30, (500,), generator=g)
    tokens = torch.randint(1, 20, (500,), generator=g)
    for bucketing in (False, True):
        batches = batch_order(lengths, 100, True, bucketing, g, tokens)
        seen = torch.cat(batches).sort().values
        assert torch.equal(seen, torch.arange(500))
        assert all(int(tokens[b].sum()) <= 100 for b in batches)


def test_split_by_tokens_gives_a_long_example_its_own_batch():
    order = torch.arange(4)
    tokens = torch.tensor([3, 9, 2, 2])
    assert [b.tolist() for b in split_by_tokens(order, tokens, 5)] == [[0], [1], [2, 3]]


def _date_batches(n: int, size: int):
    pairs = generate("date", n, seed=1)
    src_vocab = Vocab.build(tokenize_chars(s) for s, _ in pairs)
    tgt_vocab = Vocab.build(tokenize_chars(t) for _, t in pairs)
    data = encode_pairs(pairs, src_vocab, tgt_vocab, reverse_source=True)
    order = torch.arange(n)
    return src_vocab, tgt_vocab, data, [make_batch(data, i) for i in order.split(size)]


def test_accumulating_k_batches_equals_one_batch_k_times_larger():
    src_vocab, tgt_vocab, data, small = _date_batches(24, 8)
    big = [make_batch(data, torch.arange(24))]
    results = []
    for batches, accumulate in ((small, 3), (big, 1)):
        torch.manual_seed(0)
        model = build_model(tiny_model_config(16, 8), len(src_vocab), len(tgt_vocab))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        cfg = TrainConfig(accumulate=accumulate, clip_grad_norm=None)
        loss, tokens = accumulated_update(model, optimizer, batches, cfg, torch.device("cpu"))
        results.append((loss, tokens, [p.detach().clone() for p in model.parameters()]))
    (loss_a, tok_a, params_a), (loss_b, tok_b, params_b) = results
    assert tok_a == tok_b and abs(loss_a - loss_b) < 1e-3
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_validation_every_n_steps_metrics_files_and_curve(tmp_path):
    cfg = small_config(
        "train.epochs=2",
        "train.batch_size=256",
        "train.batch_type=tokens",
        "train.valid_every=3",
        "train.label_smoothing=0.1",
        "train.weight_decay=0.01",
        "train.schedule.kind=inverse_sqrt",
        "train.schedule.warmup_steps=4",
        "train.examples=2",
    )
    lines = []
    result = train(cfg, tmp_path / "run", log=lines.append, progress=False)
    steps = [r.step for r in result.history]
    assert steps[:-1] == list(range(3, 3 * len(steps) - 2, 3)) and steps[-1] >= steps[-2]
    assert sum(1 for line in lines if line.startswith("    '")) == 2 * len(steps)  # examples
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    with open(tmp_path / "run/metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(records) == len(rows) == len(steps)
    assert float(rows[-1]["dev_loss"]) == records[-1]["dev_loss"]
    assert {"dev_bleu", "dev_chrf", "lr"} <= set(records[0])
    assert records[0]["lr"] < records[1]["lr"] or records[1]["step"] > 4  # warm-up, then decay
    assert (tmp_path / "run/learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_early_stopping_and_keep_best(tmp_path):
    cfg = small_config(
        "train.epochs=30",
        "train.lr=0.5",  # far too high: the dev loss soon stops improving
        "train.early_stopping.metric=loss",
        "train.early_stopping.patience=2",
        "train.keep_best=2",
    )
    result = train(cfg, tmp_path / "run", **QUIET)
    losses = [r.dev_loss for r in result.history]
    assert result.stopped_early and len(losses) < 30
    # It stopped at the second validation in a row that did not beat the best before it.
    assert min(losses[:-2]) <= min(losses[-2:])
    assert len(losses) == 3 or min(losses[:-3]) > losses[-3]
    kept = json.loads((tmp_path / "run/checkpoints/index.json").read_text())
    assert len(kept) == 2
    files = sorted(p.name for p in (tmp_path / "run/checkpoints").glob("*.safetensors"))
    assert files == sorted(f"step-{e['step']}.safetensors" for e in kept)
    best = min(r.dev_loss for r in result.history)
    assert kept[0]["value"] == best


def test_training_ends_at_the_first_validation_that_reaches_the_target(tmp_path):
    log: list[str] = []
    cfg = small_config(
        "train.epochs=5",
        "train.valid_every=3",
        "train.early_stopping.metric=loss",
        "train.early_stopping.target=100",  # any dev loss is below it: the first validation
    )
    result = train(cfg, tmp_path / "run", log=log.append, progress=False)
    assert result.stopped_early and [r.step for r in result.history] == [3]
    assert any("reached train.early_stopping.target 100" in line for line in log), log


def test_streaming_reads_every_pair_once_per_epoch_and_trains(tmp_path):
    from jumok.config import validate
    from jumok.data.splits import streamed_batches

    pairs = generate("date", 700, seed=5)
    write = lambda name, items: (tmp_path / name).write_text(  # noqa: E731
        "".join(f"{s}\t{t}\n" for s, t in items), encoding="utf-8"
    )
    write("train.tsv", pairs[:600] + pairs[600:610])  # 10 dev pairs leaked into train
    write("dev.tsv", pairs[600:700])
    raw = {
        "data": {
            "train": str(tmp_path / "train.tsv"),
            "dev": str(tmp_path / "dev.tsv"),
            "streaming": True,
            "shuffle_buffer": 128,
        },
        "model": {"encoder": {"hidden_size": 16}, "decoder": {"hidden_size": 16}},
        "train": {"epochs": 2, "batch_size": 32},
    }
    cfg = validate(raw, "test", [])
    result = train(cfg, tmp_path / "run", **QUIET)
    assert len(result.history) == 2 and result.history[-1].step == 2 * 19  # ceil(600 / 32)
    src_vocab, tgt_vocab = result.src_vocab, result.tgt_vocab
    from jumok.data.splits import encode_pairs

    seen = []
    for batch in streamed_batches(
        cfg.data,
        set(pairs[600:700]),
        lambda chunk: encode_pairs(chunk, src_vocab, tgt_vocab, False),
        32,
        True,
        False,
        torch.Generator().manual_seed(0),
        seed=1,
        dropped=[0],
    ):
        seen.extend(tuple(row.tolist()) for row in batch.tgt_out_BT)
    assert len(seen) == 600
    with pytest.raises(Exception, match="data.streaming"):
        validate({**raw, "data": {**raw["data"], "dev": None}}, "test", [])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # clipping on, clipping off
def test_clipping_through_fused_adam_is_clip_grad_norm_then_adam(max_norm, weight_decay):
    src_vocab, tgt_vocab, _, batches = _date_batches(16, 16)
    cfg = TrainConfig(clip_grad_norm=max_norm, weight_decay=weight_decay, lr=0.01)
    torch.manual_seed(0)
    fused = build_model(tiny_model_config(16, 8), len(src_vocab), len(tgt_vocab))
    plain = build_model(tiny_model_config(16, 8), len(src_vocab), len(tgt_vocab))
    plain.load_state_dict(fused.state_dict())
    fused_opt = make_optimizer(fused, cfg)
    assert fused_opt.defaults["fused"]
    # the for-loop optimizer: accumulated_update clips with clip_grad_norm_ before its step
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    plain_opt = kind(plain.parameters(), lr=cfg.lr, weight_decay=weight_decay, foreach=False)
    device = torch.device("cpu")
    for _ in range(3):
        accumulated_update(fused, fused_opt, batches, cfg, device)
        accumulated_update(plain, plain_opt, batches, cfg, device)
        norm = torch.nn.utils.get_total_norm([p.grad for p in fused.parameters()])
        assert norm <= min(max_norm, 1e5) * (1 + 1e-5)  # the fused step leaves them clipped
        for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
