"""GRPO rewards for query rewriting and their fusion (the paper's hybrid reward).

Each reward maps a batch of (query, rewrite) pairs to one float per pair, all
vectorised over the rollout batch (one BM25 call for all rewrites, cached
query channels, one tagger forward):

- ``relevance``: how much of the query's meaning the rewrite keeps, in [0, 1].
  ``oracle``: the judge's grade / 2 (0, 0.5, 1). ``tagger``: the frozen SFT
  model's own relevance tagger, as the expected grade / 2 under its softmax over
  the label tokens, ``(p1 + 2 p2) / 2`` (the paper's learned relevance judgment).
- ``conversion``: search-engine feedback a shop has: the conversion model fit on
  the logged sessions (:mod:`qrw.shop.conversion`) scores ``page(q, r)`` as
  expected purchases per search, divided by ``conversion_scale`` so that it
  lives on the same [0, ~1] scale as the other rewards. ``--conversion-judge
  oracle`` gives the shopper simulator's expected purchases instead (the
  evaluation's own UCVR: an upper bound that crosses the wall). With
  ``conversion_gate="relevance"`` it is multiplied by the relevance reward (a
  page sells only as far as the rewrite keeps the query's meaning).
- ``recall`` (upper bound, weight 0 by default): recall@k of the intent's Exact
  products on ``page(q, r)``; it needs the intent, so it crosses the wall.
- ``format`` (rule-based), 1 when all hold, else 0: the rewrite is well formed
  (ended with EOS, not truncated, no stray special token), is non-empty, has at most ``max_words`` words, has no word
  repeated 3 or more times (degenerate repetition), and is not a verbatim copy of
  a query that contains words the catalog does not know (such a copy cannot add
  a useful retrieval channel).
- ``rules`` (rule-based, every rule by default; ``--rules`` chooses), the share of the chosen
  checks a rewrite passes, each built from what a production search team has
  without a relevance oracle (the catalog's taxonomy and a synonym dictionary
  mined from the logs' (query, clicked title) pairs,
  :attr:`qrw.shop.observed.ObservedShop.dictionary`):
  ``category``: the rewrite names a catalog category; ``anchors``: the share of
  the catalog words the dictionary reads in the query that the rewrite keeps;
  ``brand``: the rewrite names no brand that the dictionary did not read in the
  query; ``vocabulary``: the share of the rewrite's words that the search index
  knows (words of the catalog's titles); ``one-category`` (opt-in): the rewrite
  names exactly one catalog category, once (a second category widens the page's
  reach, which conversion pays for: ``computer bag brown 15 inch handbag``; the
  tagger lets it through). They target what a *learned* relevance judge
  misses (docs/EXPERIMENTS.md, "GRPO: how the defaults were chosen": the tagger
  reward drifts towards dropped attributes and rewrites with no category, and
  without ``vocabulary`` the policy
  learned to pad rewrites with words no title has, ``quality xiaomi power bank
  with xiaomi's's's's's deals``, which the tagger rated equivalent); with the
  oracle judge they are redundant.

Which components a run uses, and their weights w_c, is its ``--reward``:
``fusion`` (relevance + conversion + format, the paper's setting), or one
objective alone plus the format rule (``relevance``, ``conversion``, ``recall``).
How GRPO turns them into advantages is ``--aggregation``:

- ``normalize-then-sum`` (the default; GDPO): each component z-scored within its
  group, then weighted and summed: :func:`qrw.grpo.normalize_then_sum`;
- ``sum`` (the paper's ``rFusion``): the raw rewards fused first,
  ``r = sum_c w_c * r_c`` (:func:`fuse_rewards`), then the sum normalised once by
  :func:`qrw.grpo.group_advantages` (property 7 of docs/GRPO_TESTS.md pins this path).

The fused reward ``r`` is logged and reported under both aggregations.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import math

import numpy as np
import torch
from torch import Tensor

from qrw.config import arg, check

COMPONENTS = ("relevance", "conversion", "recall", "format", "rules")
RULES = ("category", "anchors", "brand", "vocabulary", "one-category")
REWARD_CHOICES = ("fusion", "relevance", "conversion", "recall")


@dataclass
class RewardConfig:
    """Which rewards a GRPO run optimises, and their fusion weights."""

    reward: str = arg("fusion", "objective: fusion (relevance + conversion + format) or one of "
                      "relevance, conversion, recall (each with the format rule)", choices=list(REWARD_CHOICES))
    relevance_judge: str = arg("tagger", "relevance reward from the frozen SFT model's tagger (a learned relevance "
                               "model, as in production) or the oracle judge (the evaluation's own: an upper bound)",
                               choices=["tagger", "oracle"])
    conversion_judge: str = arg("model", "conversion reward from the conversion model fit on the logged sessions "
                                "(what a shop has: qrw.shop.conversion) or the shopper simulator's expected purchases "
                                "(the evaluation's own UCVR: an upper bound)", choices=["model", "oracle"])
    conversion_gate: str = arg("none", "'relevance' multiplies the conversion reward by the relevance reward, so a "
                               "page sells only as far as the rewrite keeps the query's meaning (the conversion model "
                               "alone pays for popular pages in the query's category: docs/EXPERIMENTS.md); 'none' "
                               "leaves it alone", choices=["none", "relevance"], advanced=True)
    w_relevance: float = arg(1.0, "fusion weight of the relevance reward", advanced=True)
    w_conversion: float = arg(1.0, "fusion weight of the conversion reward", advanced=True)
    w_recall: float = arg(0.0, "fusion weight of the recall reward (fusion only)", advanced=True)
    w_format: float = arg(0.5, "weight of the rule-based format reward", advanced=True)
    conversion_scale: float = arg(0.5, "UCVR is divided by this to give the conversion reward (~[0, 1])",
                                  advanced=True)
    max_words: int = arg(16, "format rule: at most this many words in a rewrite", advanced=True)
    max_repeats: int = arg(3, "format rule: a rewrite fails when a word occurs this many times (at 2, possessives "
                           "stripped first: 'charger charger', \"kettle kettle's\" fail)", advanced=True)
    rules: str = arg("category,anchors,brand,vocabulary", "comma-separated rule checks rewarded as the 'rules' "
                     "component, or 'none': category (names a catalog category), anchors (keeps the catalog words a "
                     "mined dictionary reads in the query), brand (adds no brand the query lacks), vocabulary (the "
                     "share of its words the search index knows), one-category (names exactly one catalog category, once; "
                     "opt-in)", advanced=True)
    w_rules: float = arg(0.5, "weight of the 'rules' component (when --rules names any)", advanced=True)
    aggregation: str = arg("normalize-then-sum", "how GRPO turns several rewards into advantages: "
                           "'normalize-then-sum' z-scores each reward within its group, then weights and sums (GDPO; "
                           "measured better here, docs/EXPERIMENTS.md); 'sum' weights and sums the raw rewards, then "
                           "normalises the sum as --scale says",
                           choices=["sum", "normalize-then-sum"])

    def __post_init__(self) -> None:
        for name in ("w_relevance", "w_conversion", "w_recall", "w_format", "w_rules"):
            check(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0")
        unknown = sorted(set(self.rule_list) - set(RULES))
        check(not unknown, f"--rules: unknown rule(s) {', '.join(unknown)}; choose from {', '.join(RULES)}")
        check(self.conversion_scale > 0, "--conversion-scale must be > 0")
        check(self.conversion_gate in ("none", "relevance"),
              f"--conversion-gate must be none or relevance (got {self.conversion_gate!r})")
        check(self.max_words >= 1, "--max-words must be >= 1")
        check(self.max_repeats >= 2, "--max-repeats must be >= 2")
        check(any(w > 0 for w in self.weights().values()), "every reward weight of this objective is 0")

    def weights(self) -> dict[str, float]:
        """The fusion weights of the chosen objective (components with weight 0 are left out)."""
        if self.reward == "fusion":
            w = {"relevance": self.w_relevance, "conversion": self.w_conversion, "recall": self.w_recall,
                 "format": self.w_format}
        else:
            w = {self.reward: 1.0, "format": self.w_format}
        if self.rule_list:
            w["rules"] = self.w_rules
        return {k: v for k, v in w.items() if v > 0}

    @property
    def rule_list(self) -> tuple[str, ...]:
        """The rule checks named by ``rules``, e.g. ``("category", "anchors")``."""
        names = tuple(r.strip() for r in self.rules.split(",") if r.strip())
        return () if names == ("none",) else names


def fuse_rewards(components: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """The weighted sum of reward components (the paper's reward fusion ``rFusion``).

    ``fused = sum_k weights[k] * components[k]``, taken on the raw rewards. With
    ``--aggregation sum`` it is the reward that :func:`qrw.grpo.group_advantages`
    normalises: a component's pull is then its weight times its spread. The default,
    :func:`qrw.grpo.normalize_then_sum`, normalises each component first instead,
    so a component with a tiny spread pulls as hard as one with a large spread.

    Args:
        components: name -> rewards, all of one shape, (P, G) or (N,).
        weights: name -> weight, exactly one finite weight per component.

    Returns:
        The fused rewards, same shape as the components, floating.

    Raises:
        ValueError: no components, shapes differ, a component has no weight,
            a weight names no component, or a weight is not finite.
    """
    if not components:
        raise ValueError("fuse_rewards needs at least one reward component")
    missing = sorted(set(components) - set(weights))
    unknown = sorted(set(weights) - set(components))
    if missing:
        raise ValueError(f"no weight given for reward component(s): {', '.join(missing)}")
    if unknown:
        raise ValueError(f"weight(s) given for unknown reward component(s): {', '.join(unknown)} "
                         f"(components: {', '.join(sorted(components))})")
    shapes = {name: tuple(value.shape) for name, value in components.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"reward components must all have the same shape, got {shapes}")
    fused = None
    for name, value in components.items():
        weight = float(weights[name])
        if not math.isfinite(weight):
            raise ValueError(f"weight for reward {name!r} must be finite, got {weight}")
        term = weight * (value if value.is_floating_point() else value.float())  # same shape as the component
        fused = term if fused is None else fused + term
    return fused


def stem(word: str) -> str:
    """``word`` without its trailing possessives: ``"headphones's's"`` -> ``"headphones"`` (a repeat in disguise).

    >>> stem("headphones's's"), stem("diesel's"), stem("levi's"), stem("kettle")
    ('headphones', 'diesel', 'levi', 'kettle')
    """
    while word.endswith("'s") and len(word) > 2:
        word = word[:-2]
    return word


def format_reward(queries: list[str], rewrites: list[str], well_formed: list[bool], known_words: set[str],
                  max_words: int, max_repeats: int = 3) -> np.ndarray:
    """The rule-based format check (see the module docstring), 1.0 or 0.0 per rewrite.

    A rewrite fails when a word occurs ``max_repeats`` times or more, counted on stems (:func:`stem`) when
    ``max_repeats`` is 2 (``"charger charger"`` and ``"headphones headphones's"`` fail; at 3, the words as
    written are counted, as before).
    """
    out = np.zeros(len(rewrites))
    for i, (q, r, ok) in enumerate(zip(queries, rewrites, well_formed)):
        words = r.split()
        if not ok or not words or len(words) > max_words:
            continue
        counted = [stem(w) for w in words] if max_repeats <= 2 else words
        if max(Counter(counted).values()) >= max_repeats:
            continue
        if r == q and any(w not in known_words for w in q.split()):
            continue
        out[i] = 1.0
    return out


def category_mentions(text: str, categories: tuple[str, ...]) -> int:
    """How many times ``text`` names a catalog category (a phrase matched on whole words; repeats count).

    >>> category_mentions("computer bag brown handbag", ("computer bag", "handbag", "bag pack"))
    2
    >>> category_mentions("jeans jeans blue", ("jeans",)), category_mentions("blue", ("jeans",))
    (2, 0)
    """
    words = text.split()
    count = 0
    for category in categories:
        phrase = category.split()
        count += sum(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))
    return count


def rule_rewards(rewrites: list[str], anchors: list[str], rules: tuple[str, ...], categories: tuple[str, ...],
                 brands: set[str], vocabulary: set[str] | None = None) -> np.ndarray:
    """The share of the ``rules`` checks each rewrite passes (see the module docstring), in [0, 1].

    ``anchors[i]``: the catalog words the dictionary reads in query i (its dictionary
    rewrite; may be empty). ``categories``: the catalog's category names (some are
    phrases); ``brands``: its brand words; ``vocabulary``: the search index's words
    (needed by the ``vocabulary`` rule). With no anchors, ``anchors`` scores 1; an
    empty rewrite scores 0 on ``vocabulary``.

    >>> rule_rewards(["nike sneakers", "sneakers", "adidas sneakers", "black"], ["nike sneakers black"] * 4,
    ...              ("category", "anchors", "brand"), ("sneakers",), {"nike", "adidas"}).round(3).tolist()
    [0.889, 0.778, 0.444, 0.444]
    >>> rule_rewards(["nike sneakers", "best nike sneakers's's deals"], ["", ""], ("vocabulary",), (), set(),
    ...              {"nike", "sneakers"}).round(3).tolist()
    [1.0, 0.25]
    >>> rule_rewards(["nike sneakers", "sneakers socks", "nike", "sneakers sneakers"], [""] * 4, ("one-category",),
    ...              ("sneakers", "socks"), set()).tolist()
    [1.0, 0.0, 0.0, 0.0]
    """
    check("vocabulary" not in rules or vocabulary is not None, "the vocabulary rule needs the index's vocabulary")
    out = np.zeros(len(rewrites))
    for i, (rewrite, anchor) in enumerate(zip(rewrites, anchors)):
        padded, words, anchor_words = f" {rewrite} ", set(rewrite.split()), set(anchor.split())
        checks = []
        if "category" in rules:
            checks.append(float(any(f" {c} " in padded for c in categories)))
        if "anchors" in rules:
            checks.append(len(anchor_words & words) / len(anchor_words) if anchor_words else 1.0)
        if "brand" in rules:
            checks.append(float(not ((words & brands) - anchor_words)))
        if "vocabulary" in rules:
            tokens = rewrite.split()
            checks.append(sum(w in vocabulary for w in tokens) / len(tokens) if tokens else 0.0)
        if "one-category" in rules:
            checks.append(float(category_mentions(rewrite, categories) == 1))
        out[i] = sum(checks) / len(checks) if checks else 0.0
    return out


class RewardFunction:
    """Scores rewrites of query texts with every reward component, then fuses them.

    ``observed`` is the shop's observed side (:class:`qrw.shop.observed.ObservedShop`: catalog, engine,
    conversion model fit on the logs, log-fit dictionary): all a default run reads. ``tagger`` is a
    :class:`qrw.rewriter.Rewriter` over the frozen SFT model (``relevance_judge="tagger"``). ``oracle`` is an
    :class:`qrw.oracle.OracleView`, needed only by the upper-bound arms (``relevance_judge="oracle"``,
    ``conversion_judge="oracle"``, a ``recall`` weight) and by ``monitor=True`` (the oracle's view of the
    samples, logged as ``ucvr`` and ``page_relevance``: evaluation, never a reward). Without them those two
    entries are NaN.
    """

    def __init__(self, observed, cfg: RewardConfig, tagger=None, oracle=None,
                 monitor: bool = False):
        check(cfg.relevance_judge == "oracle" or tagger is not None, "the tagger relevance reward needs a tagger model")
        needs_oracle = cfg.relevance_judge == "oracle" or cfg.conversion_judge == "oracle" or "recall" in cfg.weights()
        check(oracle is not None or not (needs_oracle or monitor),
              "the oracle arms and the oracle monitor need the hidden truth (a qrw.oracle.OracleView)")
        self.observed = observed
        self.cfg = cfg
        self.tagger = tagger
        self.oracle = oracle
        self.monitor = monitor
        self.k = 10
        self.weights = cfg.weights()
        self.known_words = {w for title in observed.titles for w in title.split()}
        self._anchors: dict[str, str] = {}  # query text -> its dictionary rewrite (the rules' anchors)

    def __call__(self, queries: list[str], rewrites: list[str], well_formed: list[bool] | None = None
                 ) -> dict[str, np.ndarray]:
        """Per-pair components (N,) for every name in :data:`COMPONENTS`, plus ``fused``, ``ucvr`` and
        ``page_relevance`` (the oracle monitor's; NaN when it is off).

        ``queries``: the query texts, one per rewrite. ``well_formed[i]``: rewrite i ended with EOS and held no
        stray special token (default: all True, e.g. for greedy evaluation text). A component with weight 0 is
        not computed unless free (NaN in the output).
        """
        queries = [q if isinstance(q, str) else q.text for q in queries]
        well_formed = [True] * len(rewrites) if well_formed is None else well_formed
        cfg, n = self.cfg, len(rewrites)
        out: dict[str, np.ndarray] = {}
        oracle = None
        uses_oracle = (cfg.relevance_judge == "oracle" or cfg.conversion_judge == "oracle"
                       or "recall" in self.weights)
        if uses_oracle:
            arms = [f"{name} oracle" for name, judge in (("relevance-judge", cfg.relevance_judge),
                                                         ("conversion-judge", cfg.conversion_judge))
                    if judge == "oracle"] + (["recall reward"] if "recall" in self.weights else [])
            oracle = self.oracle.metrics(queries, rewrites, "upper-bound arm: " + ", ".join(arms))
        if cfg.relevance_judge == "tagger":
            probs = self.tagger.relevance_probs(queries, [r if r else "-" for r in rewrites])
            out["relevance"] = ((probs[:, 1] + 2 * probs[:, 2]) / 2).double().numpy()
        else:
            out["relevance"] = oracle["grade"] / 2
        if cfg.conversion_judge == "model":
            out["conversion"] = self.observed.page_conversion(queries, rewrites, self.k) / cfg.conversion_scale
        else:
            out["conversion"] = oracle["ucvr"] / cfg.conversion_scale
        if cfg.conversion_gate == "relevance":  # a page converts as far as the rewrite keeps the query's meaning
            out["conversion"] = out["conversion"] * out["relevance"]
        out["recall"] = oracle["recall"] if oracle is not None and "recall" in self.weights else np.full(n, np.nan)
        out["format"] = format_reward(queries, rewrites, well_formed, self.known_words, cfg.max_words,
                                      cfg.max_repeats)
        out["rules"] = self.rules(queries, rewrites) if cfg.rule_list else np.zeros(n)
        parts = {c: torch.as_tensor(out[c]) for c in self.weights}
        out["fused"] = fuse_rewards(parts, self.weights).numpy()
        watched = self.oracle.metrics(queries, rewrites, "evaluation: GRPO's oracle monitor") if self.monitor else None
        out["ucvr"] = watched["ucvr"] if watched is not None else np.full(n, np.nan)
        out["page_relevance"] = watched["relevance"] if watched is not None else np.full(n, np.nan)
        return out

    def rules(self, queries: list[str], rewrites: list[str]) -> np.ndarray:
        """The ``rules`` component: :func:`rule_rewards` with the log-fit dictionary's reading of each query as
        anchors."""
        new = sorted(set(queries) - set(self._anchors))
        if new:
            self._anchors.update(zip(new, self.observed.dictionary.rewrite(new)))
        return rule_rewards(rewrites, [self._anchors[q] or "" for q in queries], self.cfg.rule_list,
                            self.observed.category_names, set(self.observed.brands), self.known_words)

    def as_tensor(self, scores: dict[str, np.ndarray], num_samples: int, name: str = "fused") -> torch.Tensor:
        """Reward ``name`` (default: the fused one) as a (P, G) float tensor (rows prompt-major, as sampled)."""
        return torch.tensor(scores[name], dtype=torch.float32).view(-1, num_samples)  # (N,) -> (P, G)
