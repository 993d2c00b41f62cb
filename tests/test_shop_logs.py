"""Logs as a shop records them (qrw.shop.logs): no hidden fields, determinism, position bias, out-of-domain share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop.judge import EXACT
from qrw.shop.lexicon import Intent
from qrw.shop.logs import LogConfig, LoggedSession, click_pairs, session_texts, simulate_logs, split_by_query
from qrw.shop.ood import ood_queries
from qrw.shop.users import UserConfig, UserSimulator
from qrw.shop.world import World, WorldConfig

TINY = dict(seed=2, n_products=300, n_train_queries=200, n_val_queries=40, n_test_queries=60, n_log_sessions=3000)


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(**TINY))


@pytest.fixture(scope="module")
def logs(world) -> list[LoggedSession]:
    return simulate_logs(world)


def test_the_record_carries_only_what_a_shop_stores(logs):
    assert [f.name for f in dataclasses.fields(LoggedSession)] == ["query", "shown", "clicked", "purchased"]
    for s in logs[:500]:
        assert isinstance(s.query, str) and isinstance(s.purchased, int)
        assert all(type(i) is int for i in s.shown + s.clicked)
        assert not any(isinstance(v, Intent) for v in dataclasses.astuple(s))


def test_deterministic_and_seeded(world, logs):
    assert simulate_logs(world) == logs
    other = simulate_logs(World(WorldConfig(**{**TINY, "seed": 3})))
    assert other != logs


def test_sessions_are_consistent(logs):
    for s in logs:
        assert len(s.shown) <= 10 and len(set(s.shown)) == len(s.shown)
        assert list(s.clicked) == sorted(set(s.clicked)) and all(0 <= i < len(s.shown) for i in s.clicked)
        if s.purchased >= 0:  # bought what was clicked last: the session ends with the purchase
            assert s.purchased == s.clicked[-1] and s.purchased_id == s.shown[s.purchased]
        else:
            assert s.purchased_id == -1
    assert any(s.purchased >= 0 for s in logs) and any(not s.shown for s in logs)


def test_in_domain_traffic_is_the_worlds_and_excludes_val_test(world, logs):
    pool = set(ood_queries(world.config.seed, 5000, "train"))
    in_domain = [s.query for s in logs if s.query not in pool]
    assert in_domain == [text for text, _, _ in world.logs]
    held_out = {q.text for split in ("val", "test") for q in world.queries[split]}
    assert not held_out & {s.query for s in logs}


def test_out_of_domain_searches_at_the_stated_share(world, logs):
    pool = set(ood_queries(world.config.seed, 5000, "train"))
    unseen = set(ood_queries(world.config.seed, 5000, "val")) | set(ood_queries(world.config.seed, 5000, "test"))
    ood = [s for s in logs if s.query in pool]
    n_in = len(world.logs)
    assert len(ood) == round(n_in * 0.1 / 0.9) and len(logs) == n_in + len(ood)
    assert all(world.judge.parse(s.query) is None for s in ood)
    assert not unseen & {s.query for s in logs}  # the gate's val/test searches never occur in the logs
    assert not any(s.purchased >= 0 for s in ood)  # nothing they want is sold (irrelevant products never sell)
    positions = [i for i, s in enumerate(logs) if s.query in pool]
    assert positions[0] < len(logs) // 4 and positions[-1] > 3 * len(logs) // 4  # spread over the logs
    half = simulate_logs(world, LogConfig(ood_share=0.5))
    assert sum(s.query in pool for s in half) == n_in
    assert simulate_logs(world, LogConfig(ood_share=0.0)) != logs
    assert all(s.query not in pool for s in simulate_logs(world, LogConfig(ood_share=0.0)))


def exact_click_rates(world, logs) -> tuple[np.ndarray, np.ndarray]:
    """(10,) click rate of EXACT products by position, and their counts (evaluation: reads the judge)."""
    intents = {q.text: q.intent for q in world.log_queries}
    shown, clicked = np.zeros(10), np.zeros(10)
    for s in logs:
        intent = intents.get(s.query)
        if intent is None:
            continue
        grades = world.judge.grade_products(intent)
        for pos, pid in enumerate(s.shown):
            if grades[pid] == EXACT and (s.purchased < 0 or pos <= s.purchased):
                shown[pos] += 1
                clicked[pos] += pos in s.clicked
    return clicked / np.maximum(shown, 1), shown


def test_position_bias_comes_from_examination(world, logs):
    rates, shown = exact_click_rates(world, logs)
    assert shown.min() > 50
    # default examination (1 + i) ** -0.7: an exact product at the top is clicked ~5x as often as at position 10
    assert rates[0] > 3 * rates[9] and rates[0] > 2 * rates[5:].mean()
    np.testing.assert_allclose(rates[0], 0.5, atol=0.05)  # examined surely, clicked with click_exact = 0.5
    flat = UserSimulator(world, UserConfig(examination_power=0.0))
    rates, shown = exact_click_rates(world, simulate_logs(world, users=flat))
    stderr = np.sqrt(0.25 / shown)
    assert np.all(np.abs(rates - 0.5) < 4 * stderr + 0.01), rates  # no examination decay: no position bias


def test_split_by_query_keeps_texts_on_one_side(logs):
    fit, held = split_by_query(logs, 0.25, seed=0)
    assert len(fit) + len(held) == len(logs)
    assert not {s.query for s in fit} & {s.query for s in held}
    texts = {s.query for s in logs}
    assert len({s.query for s in held}) == round(0.25 * len(texts))
    assert split_by_query(logs, 0.25, seed=0) == (fit, held) and split_by_query(logs, 0.25, seed=1) != (fit, held)
    with pytest.raises(UserError):
        split_by_query(logs, 1.0, seed=0)


def test_texts_and_click_pairs_by_hand():
    titles = ["a phone", "b phone", "c case"]
    sessions = [LoggedSession("fone", (1, 0, 2), (0, 2), 2), LoggedSession("sofa", (), (), -1),
                LoggedSession("fone", (0,), (0,), -1)]
    assert session_texts(sessions, titles) == ["search: fone | clicked: b phone | purchased: c case",
                                               "search: sofa | no click", "search: fone | clicked: a phone"]
    assert click_pairs(sessions, titles) == [("fone", "b phone"), ("fone", "c case"), ("fone", "a phone")]
    assert click_pairs(sessions, titles, purchases_only=True) == [("fone", "c case")]


def test_config_errors_are_one_line():
    with pytest.raises(UserError, match="ood-share"):
        LogConfig(ood_share=1.0)
    with pytest.raises(UserError, match="page-size"):
        LogConfig(page_size=0)
