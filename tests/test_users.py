"""User simulator: closed-form expected purchases vs Monte Carlo, hand-computed cases, validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop.users import UserConfig, UserSimulator
from qrw.shop.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=1, n_products=300, n_train_queries=100, n_val_queries=10, n_test_queries=50,
                             n_log_sessions=0))


def tiny_world():
    """Two categories: a has products 0 (best-seller), 1; b has product 2. Equal prices."""
    products = [SimpleNamespace(category="a"), SimpleNamespace(category="a"), SimpleNamespace(category="b")]
    return SimpleNamespace(products=products, popularity=np.array([10.0, 2.5, 4.0]), prices=np.array([5.0, 5.0, 5.0]))


def test_hand_computed_expected_purchases():
    config = UserConfig(examination_power=1.0, click_exact=0.5, buy_exact=0.8, click_substitute=0.25,
                        buy_substitute=0.4, popularity_power=0.5, price_power=0.3)
    users = UserSimulator(tiny_world(), config)
    # appeal: product 0 -> 1.0, product 1 -> (2.5 / 10) ** 0.5 = 0.5, product 2 -> 1.0 (its category's best).
    np.testing.assert_allclose(users.appeal, [1.0, 0.5, 1.0])
    page = np.array([[0, 1, -1]])
    grades = np.array([[3, 2, 0]])
    q0 = 1.0 * 0.5 * 0.8 * 1.0          # position 0: examined surely
    q1 = 0.5 * 0.25 * 0.4 * 0.5         # position 1: examined with 1 / 2
    expected = 1 - (1 - q0) * (1 - q1)
    assert users.expected_purchases(page, grades)[0] == pytest.approx(expected)
    np.testing.assert_allclose(users.purchase_probs(page, grades), [[q0, q1, 0.0]])


def test_monte_carlo_matches_closed_form(world):
    users = UserSimulator(world)
    rng = np.random.default_rng(0)
    n_pages, k, n_users = 6, 10, 20_000
    pages = rng.integers(-1, len(world.products), size=(n_pages, k))
    grades = rng.integers(0, 4, size=(n_pages, k))
    grades[0] = 3  # one page of exact matches: high conversion
    expected = users.expected_purchases(pages, grades)  # (n_pages,)
    repeated_pages = np.repeat(pages, n_users, axis=0)  # (n_pages * n_users, k)
    repeated_grades = np.repeat(grades, n_users, axis=0)
    clicks, purchases = users.sample_sessions(repeated_pages, repeated_grades, rng)
    assert clicks.shape == repeated_pages.shape and clicks.dtype == bool
    assert purchases.shape == (n_pages * n_users,) and set(np.unique(purchases)) <= {0, 1}
    means = purchases.reshape(n_pages, n_users).mean(axis=1)
    stderr = np.sqrt(expected * (1 - expected) / n_users)
    assert np.all(np.abs(means - expected) <= 4 * stderr + 1e-9), (means, expected)
    assert not clicks[repeated_pages < 0].any()


def test_no_clicks_after_the_first_purchase(world):
    users = UserSimulator(world, UserConfig(examination_power=0.0, click_exact=1.0, buy_exact=1.0,
                                            popularity_power=0.0, price_power=0.0))
    best = int(np.argmax(world.popularity))
    pages = np.full((5, 4), best)
    grades = np.full((5, 4), 3)
    clicks, purchases = users.sample_sessions(pages, grades, np.random.default_rng(0))
    assert purchases.tolist() == [1] * 5
    assert clicks.tolist() == [[True, False, False, False]] * 5


def test_relevance_and_position_raise_conversion(world):
    users = UserSimulator(world)
    ids = np.argsort(-world.popularity)[:10][None, :]  # (1, 10) popular products
    exact = users.expected_purchases(ids, np.full((1, 10), 3))
    substitute = users.expected_purchases(ids, np.full((1, 10), 2))
    complement = users.expected_purchases(ids, np.full((1, 10), 1))
    irrelevant = users.expected_purchases(ids, np.full((1, 10), 0))
    assert exact > substitute > complement > irrelevant == 0
    one_exact_first = np.array([[3] + [0] * 9])
    one_exact_last = np.array([[0] * 9 + [3]])
    assert users.expected_purchases(ids, one_exact_first) > users.expected_purchases(ids, one_exact_last)
    empty = np.full((1, 10), -1)
    assert users.expected_purchases(empty, np.full((1, 10), 3))[0] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"click_exact": 1.5}, "--click-exact must be in [0, 1]"),
    ({"examination_power": -1.0}, "--examination-power must be >= 0"),
    ({"popularity_power": -0.1}, "--popularity-power must be >= 0"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(UserError) as info:
        UserConfig(**kwargs)
    assert message in str(info.value)


def test_shape_mismatch_is_a_user_error(world):
    users = UserSimulator(world)
    with pytest.raises(UserError):
        users.expected_purchases(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64))
