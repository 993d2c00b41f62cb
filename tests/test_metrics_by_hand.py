"""The page metrics (qrw.shop.metrics) on stub judge, engine and shoppers, every value by hand.

test_metrics.py checks them on a generated world against a direct computation; here
the pages and grades are written out, so that each formula of the module docstring
(relevance = exact on page / k, recall = exact on page / min(exact in catalog, k),
accuracy = grade == 2, NaN where undefined) and the default k = 10 are pinned.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from qrw.config import UserError
from qrw.shop.judge import EXACT, IRRELEVANT, SUBSTITUTE
from qrw.shop.metrics import page_grades, rewrite_metrics, summarize

GRADES = {"a": np.array([EXACT, SUBSTITUTE, EXACT, IRRELEVANT, EXACT], dtype=np.int8),  # 3 exact products
          "b": np.array([IRRELEVANT, IRRELEVANT, EXACT, IRRELEVANT, IRRELEVANT], dtype=np.int8),  # 1
          "c": np.array([SUBSTITUTE] * 5, dtype=np.int8)}  # none


class Judge:
    def grade_products(self, intent):
        return GRADES[intent]

    def exact_count(self, intent):
        return int((GRADES[intent] == EXACT).sum())

    def grade_rewrite(self, intent, rewrite):
        return 2 if rewrite == "good" else 1


class Engine:
    """Pages written out: query "qa" shows products 0, 1, 2; "qb" product 2; "qc" products 4, 0."""

    PAGES = {"qa": [0, 1, 2], "qb": [2], "qc": [4, 0]}

    def pages(self, texts, rewrites, k):
        self.k = k
        out = np.full((len(texts), k), -1)
        for i, text in enumerate(texts):
            ids = self.PAGES[text][:k]
            out[i, :len(ids)] = ids
        return out


class Users:
    def expected_purchases(self, pages, grades):
        return (grades == EXACT).sum(axis=1) * 0.25 + (pages >= 0).sum(axis=1) * 0.01


WORLD = SimpleNamespace(judge=Judge())
QUERIES = [SimpleNamespace(text="qa", intent="a"), SimpleNamespace(text="qb", intent="b"),
           SimpleNamespace(text="qc", intent="c")]


def test_page_grades_by_hand():
    """Product 0 is a product like any other; -1 is an empty slot (IRRELEVANT)."""
    grades = page_grades(Judge(), ["a", "b"], np.array([[0, 1, -1], [2, 0, -1]]))
    assert grades.tolist() == [[EXACT, SUBSTITUTE, IRRELEVANT], [EXACT, IRRELEVANT, IRRELEVANT]]
    assert grades.dtype == np.int8


def test_rewrite_metrics_by_hand_with_the_default_k_of_10():
    engine = Engine()
    m = rewrite_metrics(WORLD, engine, Users(), QUERIES, ["good", "meh", None])
    assert engine.k == 10
    assert m["relevance"].tolist() == [2 / 10, 1 / 10, 0.0]
    assert m["recall"][:2].tolist() == [2 / 3, 1.0] and np.isnan(m["recall"][2])  # "c" has no exact product
    assert m["grade"][:2].tolist() == [2.0, 1.0] and np.isnan(m["grade"][2])
    assert m["accuracy"][:2].tolist() == [1.0, 0.0] and np.isnan(m["accuracy"][2])
    assert m["ucvr"].tolist() == pytest.approx([2 * 0.25 + 0.03, 0.25 + 0.01, 0.02])
    assert all(v.dtype == np.float64 for v in m.values())


def test_recall_divides_by_the_smaller_of_the_catalog_and_the_page():
    """k = 2: intent "a" has 3 exact products but a page of 2 slots can show 2: recall 1, not 2/3."""
    m = rewrite_metrics(WORLD, Engine(), Users(), QUERIES[:1], None, k=2)
    assert m["relevance"].tolist() == [0.5] and m["recall"].tolist() == [0.5]  # page 0, 1: one exact of 2
    engine = Engine()
    engine.PAGES = {"qa": [0, 2]}
    m = rewrite_metrics(WORLD, engine, Users(), QUERIES[:1], ["good"], k=2)
    assert m["relevance"].tolist() == [1.0] and m["recall"].tolist() == [1.0]
    assert np.isnan(rewrite_metrics(WORLD, Engine(), Users(), QUERIES[:1], None)["accuracy"][0])  # no rewrite
    with pytest.raises(UserError, match="one rewrite per query"):
        rewrite_metrics(WORLD, Engine(), Users(), QUERIES, ["good"])


def test_summarize_orders_world_segments_first_then_others_by_first_appearance():
    summary = summarize({"ucvr": np.array([1.0, 2.0, 3.0, 4.0, 5.0])}, ["ood", "tail", "novel", "head", "ood"])
    assert list(summary) == ["head", "tail", "ood", "novel", "all"]
    assert summary["ood"] == {"ucvr": 3.0, "n": 2} and summary["novel"] == {"ucvr": 3.0, "n": 1}
    assert summary["all"] == {"ucvr": 3.0, "n": 5}
