"""The conversion model fit on logs (qrw.shop.conversion): AUC by hand, the logistic fit, features, the bench."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

import qrw.shop.conversion as conversion
from qrw.bench.conversion import main as bench_main
from qrw.config import UserError
from qrw.shop.conversion import FEATURES, ConversionModel, at_risk_impressions, auc, fit_logistic, sigmoid
from qrw.shop.logs import LoggedSession, simulate_logs, split_by_query
from qrw.shop.search import SearchEngine
from qrw.shop.world import World, WorldConfig

TINY = dict(seed=2, n_products=300, n_train_queries=200, n_val_queries=40, n_test_queries=60, n_log_sessions=3000)


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(**TINY))


@pytest.fixture(scope="module")
def fitted(world):
    logs = simulate_logs(world)
    fit, held = split_by_query(logs, 0.2, seed=0)
    engine = SearchEngine(world.titles, world.popularity)
    return ConversionModel(world.products, engine).fit(fit), fit, held


def naive_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_auc_by_hand_and_against_the_pairwise_definition():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # ties count 1/2: positive 0.5 ties both negatives (1), positive 0.9 beats both (2): 3 of 4 pairs
    assert auc(np.array([0.5, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1])) == 0.75
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0
    assert auc(np.array([1.0, 2.0, 3.0]), np.array([1, 0, 0])) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=30).astype(float)  # many ties
        labels = rng.integers(0, 2, size=30)
        labels[:2] = [0, 1]
        assert auc(scores, labels) == pytest.approx(naive_auc(scores, labels))
    with pytest.raises(UserError):
        auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_the_docstring_examples_run():
    assert doctest.testmod(conversion).failed == 0


def test_sigmoid_is_stable():
    z = np.array([-800.0, -3.0, 0.0, 2.0, 800.0])
    out = sigmoid(z)
    assert np.all(np.isfinite(out)) and out[0] == 0.0 and out[-1] == 1.0
    np.testing.assert_allclose(out[1:4], 1 / (1 + np.exp(-z[1:4])))


def test_logistic_fit_recovers_known_weights():
    rng = np.random.default_rng(1)
    n = 60_000
    X = np.concatenate([np.ones((n, 1)), rng.normal(size=(n, 3))], axis=1)
    w_true = np.array([-1.0, 2.0, -0.5, 0.0])
    y = (rng.random(n) < sigmoid(X @ w_true)).astype(float)
    w = fit_logistic(X, y, l2=0.0)
    np.testing.assert_allclose(w, w_true, atol=0.05)
    # with a penalty: the gradient of the penalised loss vanishes at the fit (intercept unpenalised)
    w = fit_logistic(X, y, l2=500.0)
    gradient = X.T @ (sigmoid(X @ w) - y) + 500.0 * np.r_[0.0, w[1:]]
    np.testing.assert_allclose(gradient, 0.0, atol=1e-6)
    assert np.all(np.abs(w[1:3]) < np.abs(w_true[1:3]))  # shrunk


def test_impressions_at_risk_by_hand():
    sessions = [LoggedSession("a", (5, 6, 7), (0, 1), 1), LoggedSession("b", (8, 9), (), -1),
                LoggedSession("c", (), (), -1)]
    rows, positions, labels = at_risk_impressions(sessions)
    assert rows == [0, 0, 1, 1]  # after the purchase at position 1 the shopper left: position 2 is not at risk
    assert positions.tolist() == [0, 1, 0, 1] and labels.tolist() == [0, 1, 0, 0]


def test_features_by_hand(world, fitted):
    model = fitted[0]
    p = world.products[0]
    other_brand = next(b for b in model.brand_index if b != p.brand)
    other_category = next(c for c in model.category_index if c != p.category)
    value = next(v for v, attrs in model.value_attrs.items()
                 if v not in dict(p.attrs).values() and attrs & set(dict(p.attrs)))
    texts = [f"{p.brand} {p.category}", f"{other_brand} {other_category} {value}"]
    raw = model.features(texts, np.array([[p.id, -1], [-1, p.id]]))  # (2, 2, F)
    col = {name: i for i, name in enumerate(FEATURES)}
    first, second = raw[0, 0], raw[1, 1]
    assert first[col["category named"]] == 1 and first[col["brand named"]] == 1 and first[col["other brand"]] == 0
    assert second[col["other brand"]] == 1 and second[col["other category"]] == 1
    assert second[col["brand named"]] == 0 and second[col["value conflict"]] == 1
    assert first[col["overlap"]] == 1.0 and first[col["position"]] == 0.0 and second[col["position"]] == np.log(2)
    assert not raw[0, 1].any() and not raw[1, 0].any()  # empty slots
    # the BM25 feature is the engine's own score: bm25 + lam * log(popularity) is its rank score
    ids, scores = model.engine.search([texts[0]], 10)
    raw = model.features([texts[0]], ids)
    np.testing.assert_allclose(raw[0, :, col["bm25"]] + model.engine.prior[ids[0]], scores[0], rtol=1e-5)


def test_page_conversion_is_one_minus_the_product(fitted):
    model, _, held = fitted
    texts = [s.query for s in held[:20]]
    pages = np.full((20, 10), -1, dtype=np.int64)
    for r, s in enumerate(held[:20]):
        pages[r, :len(s.shown)] = s.shown
    p = model.purchase_probs(texts, pages)
    assert np.all(p[pages < 0] == 0) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(model.page_conversion(texts, pages), 1 - np.prod(1 - p, axis=1))
    assert model.page_conversion(["phone"], np.full((1, 10), -1))[0] == 0.0


def test_fit_on_logs_predicts_held_out_purchases(fitted):
    model, _, held = fitted
    rows, positions, labels = at_risk_impressions(held)
    pages = np.full((len(held), 10), -1, dtype=np.int64)
    for r, s in enumerate(held):
        pages[r, :len(s.shown)] = s.shown
    predicted = model.purchase_probs([s.query for s in held], pages)[rows, positions]
    assert auc(predicted, labels) > 0.75
    assert abs(predicted.mean() - labels.mean()) < 0.3 * labels.mean()  # calibrated in the mean
    assert set(model.coefficients()) == {"intercept", *FEATURES}


def test_fit_needs_purchases(world):
    model = ConversionModel(world.products, SearchEngine(world.titles, world.popularity))
    with pytest.raises(UserError):
        model.fit([])
    with pytest.raises(UserError):
        model.fit([LoggedSession("phone", (1, 2), (), -1)])


def test_the_bench_command_prints_its_table(capsys):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert bench_main(flags) == 0
    out = capsys.readouterr().out
    assert "AUC: model" in out and "ECE vs q" in out and "same-query order agreement" in out and "label 2" in out
    with pytest.raises(UserError):
        bench_main(flags + ["--held-out-share", "1.5"])
