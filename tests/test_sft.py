"""Stage 0/1 training pieces: loss masks, the multi-task loss, accumulation, LR schedule, data order."""

import math

import pytest
import torch

from qrw.config import UserError
from qrw.data import TASKS, TaskMixture, collate, mixture_counts, pack_rows, stream_indices
from qrw.lm.model import ModelConfig, Transformer, document_positions
from qrw.runs import lr_at
from qrw.sft import TrainConfig, accumulate_gradients, multitask_loss
from qrw.lm.tokenizer import Tokenizer, render_pretrain, render_relevance, render_rewrite

CORPUS = ["nike sneakers black men", "blk kicks for men", "samsung phone 128gb blue", "fridge lg silver",
          "refrigerator lg silver", "apple laptop 16gb", "cheap earbuds sony", "headphones sony black"] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, 320)


def items(tok):
    return [("rewrite", render_rewrite(tok, "blk kicks for men", "nike sneakers black men")),
            ("relevance", render_relevance(tok, "blk kicks for men", "nike sneakers black", 1)),
            ("pretrain", render_pretrain(tok, "samsung phone 128gb blue")),
            ("rewrite", render_rewrite(tok, "fridge lg", "refrigerator lg"))]


def test_prompt_tokens_receive_no_gradient(tok):
    """The loss depends only on logits that predict loss-masked targets (rewrite + EOS, label + EOS)."""
    batch = collate(items(tok)[:2], tok.pad_id, {"rewrite": 1.0, "relevance": 1.0})
    logits = torch.randn(*batch.input_ids.shape, tok.vocab_size, requires_grad=True)
    loss, _ = multitask_loss(logits, batch, batch.target_mask.sum().item())
    loss.backward()
    per_position = logits.grad.abs().sum(-1)  # (B, T)
    assert torch.all(per_position[batch.target_mask == 0] == 0)
    assert torch.all(per_position[batch.target_mask == 1] > 0)
    # the relevance row trains on exactly two targets: <|rel_1|> and <|eos|>
    rel_targets = batch.targets[1][batch.target_mask[1] == 1].tolist()
    assert rel_targets == [tok.rel_ids[1], tok.eos_id]
    # the rewrite row's first target is the first rewrite token, right after <|sep|>
    first = int(batch.target_mask[0].nonzero()[0])
    assert batch.input_ids[0, first].item() == tok.sep_id


def test_multitask_loss_equals_weighted_per_task_losses_by_hand(tok):
    """L = sum_i w_task(i) CE_i / N over target tokens, computed with explicit loops."""
    weights = {"rewrite": 0.7, "relevance": 2.5, "pretrain": 1.0}
    its = items(tok)
    batch = collate(its, tok.pad_id, weights)
    torch.manual_seed(0)
    logits = torch.randn(*batch.input_ids.shape, tok.vocab_size)
    loss, stats = multitask_loss(logits, batch, batch.target_mask.sum().item())
    total, n_targets = 0.0, 0
    per_task = {t: [0.0, 0] for t in TASKS}
    for b, (task, (ids, mask)) in enumerate(its):
        for t in range(len(ids) - 1):
            if mask[t + 1]:
                row = logits[b, t].tolist()
                lse = math.log(sum(math.exp(x) for x in row))
                ce = lse - row[ids[t + 1]]
                total += weights[task] * ce
                n_targets += 1
                per_task[task][0] += ce
                per_task[task][1] += 1
    assert loss.item() == pytest.approx(total / n_targets, rel=1e-5)
    for task, (ce_sum, count) in per_task.items():
        if count == 0:  # a task with no example in the batch (here "labelled") reports nothing
            assert f"{task}_tokens" not in stats
            continue
        assert stats[f"{task}_loss_sum"].item() == pytest.approx(ce_sum, rel=1e-5)
        assert stats[f"{task}_tokens"].item() == count


def test_gradient_accumulation_equals_full_batch(tok):
    """Micro-batches of 1 and 3 accumulate exactly the full-batch gradient (global token normaliser)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", tok.vocab_size))
    weights = {"rewrite": 1.0, "relevance": 3.0, "pretrain": 0.5}
    grads = []
    for micro in (4, 1, 3):
        model.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradients(model, items(tok), micro, tok.pad_id, weights, torch.device("cpu"))
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        for g_full, g in zip(grads[0], other):
            torch.testing.assert_close(g, g_full, rtol=1e-5, atol=1e-7)


def test_target_only_logits_give_the_full_logits_loss_and_gradient(tok):
    """Running the LM head only at target positions (select=) changes nothing but the work done."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", tok.vocab_size))
    batch = collate(items(tok), tok.pad_id, {"rewrite": 1.0, "relevance": 3.0, "pretrain": 0.5})
    n = batch.target_mask.sum().item()
    results = []
    for select in (None, batch.target_mask.bool()):
        model.zero_grad(set_to_none=True)
        logits = model(batch.input_ids, document_ids=batch.document_ids, select=select)
        loss, stats = multitask_loss(logits, batch, n)
        loss.backward()
        results.append((logits.dim(), loss.item(), {k: v.item() for k, v in stats.items()},
                        [p.grad.clone() for p in model.parameters()]))
    (dim_full, loss_full, stats_full, grads_full), (dim_sel, loss_sel, stats_sel, grads_sel) = results
    assert (dim_full, dim_sel) == (3, 2)
    assert loss_sel == pytest.approx(loss_full, rel=1e-6)
    assert stats_sel == pytest.approx(stats_full, rel=1e-6)
    for g_full, g in zip(grads_full, grads_sel):
        torch.testing.assert_close(g, g_full, rtol=1e-5, atol=1e-7)


def test_pack_rows_first_fit_decreasing_by_hand():
    # lengths 5 3 4 2 6 into rows of 8: 6 -> row0; 5 -> row1; 4 -> row2; 3 -> row1 (5+3); 2 -> row0 (6+2)
    assert pack_rows([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    assert pack_rows([9, 1], 8) == [[0], [1]]  # too long for a row: a row of its own
    assert pack_rows([2, 2, 2], 0) == [[0], [1], [2]]  # nothing fits in a row of 0


def test_packed_collate_layout_by_hand(tok):
    """Two examples in one row: ids, shifted targets, document ids, positions restarting at 0, tasks."""
    a = ([10, 11, 12, 13], [0, 0, 1, 1])  # 3 inputs
    b = ([20, 21, 22], [0, 1, 1])         # 2 inputs
    batch = collate([("rewrite", a), ("relevance", b)], 0, {"rewrite": 1.0, "relevance": 3.0}, pack_len=8)
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21]]
    assert batch.targets.tolist() == [[11, 12, 13, 21, 22]]
    assert batch.target_mask.tolist() == [[0, 1, 1, 1, 1]]
    assert batch.weights.tolist() == [[0, 1, 1, 3, 3]]
    assert batch.document_ids.tolist() == [[0, 0, 0, 1, 1]]
    assert batch.task_ids.tolist() == [[TASKS.index("rewrite")] * 3 + [TASKS.index("relevance")] * 2]
    assert document_positions(batch.document_ids).tolist() == [[0, 1, 2, 0, 1]]
    padded = collate([("rewrite", a), ("relevance", b)], 0, {"rewrite": 1.0, "relevance": 3.0})
    assert padded.document_ids.tolist() == [[0, 0, 0], [0, 0, -1]]
    assert padded.task_ids[1].tolist() == [TASKS.index("relevance")] * 2 + [-1]


def test_packed_rows_give_the_padded_loss_gradient_and_logits(tok):
    """Packing changes the layout, not the computation: each example's logits, the loss and the gradient match."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", tok.vocab_size))
    its = items(tok) * 3  # 12 examples of 3 tasks
    weights = {"rewrite": 1.0, "relevance": 3.0, "pretrain": 0.5}
    n = float(sum(sum(mask[1:]) for _, (_, mask) in its))
    results = []
    for pack_len in (0, 32):
        batch = collate(its, tok.pad_id, weights, pack_len)
        model.zero_grad(set_to_none=True)
        logits = model(batch.input_ids, document_ids=batch.document_ids, select=batch.target_mask.bool())
        loss, stats = multitask_loss(logits, batch, n)
        loss.backward()
        results.append((batch.input_ids.shape, logits, loss.item(), {k: v.item() for k, v in stats.items()},
                        [p.grad.clone() for p in model.parameters()]))
    (shape_pad, logits_pad, loss_pad, stats_pad, grads_pad), (shape_pack, logits_pack, loss_pack, stats_pack, grads_pack) = results
    assert shape_pack[0] < shape_pad[0] and shape_pack[0] * shape_pack[1] < shape_pad[0] * shape_pad[1]
    # the target rows come in another order when packed; compare them as sorted sets of rows
    key = lambda x: x[:, :4].sum(-1)  # noqa: E731
    torch.testing.assert_close(logits_pack[key(logits_pack).argsort()], logits_pad[key(logits_pad).argsort()],
                               rtol=1e-4, atol=1e-5)
    assert loss_pack == pytest.approx(loss_pad, rel=1e-5)
    assert stats_pack == pytest.approx(stats_pad, rel=1e-5)
    for g_pad, g in zip(grads_pad, grads_pack):
        torch.testing.assert_close(g, g_pad, rtol=1e-4, atol=1e-6)


def test_a_packed_document_sees_nothing_of_its_neighbours(tok):
    """Changing the first document of a row leaves the second one's logits untouched (and vice versa for causality)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", tok.vocab_size)).eval()
    a, b = render_rewrite(tok, "blk kicks for men", "nike sneakers"), render_rewrite(tok, "fridge lg", "refrigerator lg")
    c = render_rewrite(tok, "cheap earbuds sony", "headphones sony")
    with torch.no_grad():
        outs = []
        for first in (a, c):
            batch = collate([("rewrite", first), ("rewrite", b)], tok.pad_id, {"rewrite": 1.0}, pack_len=64)
            assert batch.input_ids.shape[0] == 1
            logits = model(batch.input_ids, document_ids=batch.document_ids)  # (1, T, V)
            outs.append(logits[0, batch.document_ids[0] == 1])
        alone = model(torch.tensor([b[0][:-1]]))[0]  # b alone, no padding, positions from 0
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], alone, rtol=1e-5, atol=1e-5)


def test_lr_schedule_warmup_then_cosine():
    def lr(step):
        return lr_at(step, peak=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)

    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # half way down the cosine
    assert lr(110) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 109))


def test_lr_schedule_warmup_then_constant():
    """GRPO's schedule (min_ratio 1): linear warmup, then exactly the peak."""
    lrs = [lr_at(s, peak=3e-4, warmup_steps=5, total_steps=250) for s in range(250)]
    assert lrs[:5] == pytest.approx([6e-5, 1.2e-4, 1.8e-4, 2.4e-4, 3e-4])
    assert all(v == 3e-4 for v in lrs[4:])


def test_data_order_is_a_function_of_the_step():
    """Each epoch is a permutation; any window of the stream is reproducible from its start alone."""
    stream = stream_indices(7, 0, 21, seed=3, task_index=1)
    for e in range(3):
        assert sorted(stream[7 * e:7 * (e + 1)]) == list(range(7))
    assert stream_indices(7, 5, 9, seed=3, task_index=1) == stream[5:14]
    assert stream_indices(7, 0, 21, seed=4, task_index=1) != stream


def test_task_mixture_counts_and_reproducibility(tok):
    data = {"rewrite": [render_rewrite(tok, f"q{i}", "nike") for i in range(10)],
            "relevance": [render_relevance(tok, f"q{i}", "nike", i % 3) for i in range(6)]}
    counts = mixture_counts(8, ("rewrite", "relevance"), 0.75)
    assert counts == {"rewrite": 6, "relevance": 2}
    mix = TaskMixture(data, counts, {"rewrite": 1.0, "relevance": 1.0}, seed=1)
    b = mix.batch(4)
    assert [t for t, _ in b].count("rewrite") == 6 and len(b) == 8
    assert mix.batch(4) == b and mix.batch(5) != b


def test_invalid_training_settings_are_user_errors():
    with pytest.raises(UserError, match="learning rate"):
        TrainConfig(lr=-1.0)
    with pytest.raises(UserError, match="batch size"):
        TrainConfig(batch_size=0)
