"""``python -m qrw.rewrite``: rewrite a query with a trained run and show what the rewrite does to search.

The product in one command::

    python -m qrw.rewrite --ckpt runs/sft "blk kicks for men"
    python -m qrw.rewrite --ckpt runs/grpo "telly 55in" --samples 4 --temperature 1.0
    python -m qrw.rewrite --ckpt runs/sft          # interactive: one query per line, Ctrl-D quits
    python -m qrw.rewrite --ckpt runs/grpo --gate 0.2 --gate-query vocabulary "grey leather sofa"

For each query it prints:

1. the normalised query (trimmed, whitespace collapsed, lowercased; over-long
   queries truncated to the model's query budget, with a note) and the judge's
   parse of it: the intent the oracle reads in the text. That parse stands in
   for the shopper's true intent, which a typed query does not come with; when
   the judge finds no intent (no known category, or two values for one slot),
   nothing below that needs one (grades, conversion, recall) is shown;
2. the greedy rewrite, and ``--samples N`` sampled ones at ``--temperature T``
   (seeded by ``--seed``), each with the model's own relevance tagger,
   P(0 irrelevant / 1 partial / 2 equivalent) and its argmax (runs trained
   without the relevance task have no tagger; an empty rewrite is tagged as
   ``-``, as the GRPO tagger reward does), and the GRPO reward components:
   ``judge`` (the judge's grade of the rewrite), ``conversion`` (expected
   purchases per user on ``page(q, r)``, the shopper simulator), ``recall``
   (recall@10 of the intent's Exact products) and ``relevance`` (share of
   Exact products on the page); the same for no rewrite first, as the baseline;
3. the top ``--k`` results before (``page(q)``) and after
   (``page(q, greedy rewrite)``) with the judge's grade of each product (Exact,
   Substitute, Complement, Irrelevant) and its title; ``+`` marks a product the
   rewrite brought to the page. Metrics are over the 10-slot page the
   evaluation uses; with ``--k`` above 10 the listing shows a longer page.

With ``--gate THRESHOLD`` the serving gate decides whether the greedy rewrite is
served: it is when the gate's tagger gives it P(equivalent) above THRESHOLD
(a GRPO run's frozen SFT init's tagger, or ``--gate-judge RUN``'s, as in
``python -m qrw.evaluate --gate``, which also chooses a threshold on validation
data: ``--gate auto`` there prints it) and, with ``--gate-query dictionary``,
the dictionary fit on the shop's logs reads a catalog category or brand in the
query (``vocabulary``: the shop knows every word of the query, from its
catalog, logs, training queries and mined pairs; the observed side only). A withheld rewrite leaves page(q) alone as the
results.

Input handling: any Unicode is accepted
(byte-level tokenizer; undecodable bytes become U+FFFD); queries given as
arguments must not be empty (a one-line error before anything is loaded); in
interactive mode an empty line prints a one-line note and the loop goes on, and
end of input ends it. A missing, corrupted or mismatched run directory is a
one-line error (``error: ...``, exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from qrw.config import Parser, check, resolve_device, run_main
from qrw.lm.tokenizer import normalize_query
from qrw.rewriter import apply_gate
from qrw.gate import GATE_QUERY_CHECKS, query_check_passes
from qrw.scorecard import run_name, tagger_source
from qrw.shop.judge import COMPLEMENT, EXACT, IRRELEVANT, SUBSTITUTE, render_canonical
from qrw.shop.lexicon import Intent, Query
from qrw.shop.metrics import rewrite_metrics
from qrw.shop.shop import Shop

PRODUCT_GRADE_NAMES = {EXACT: "Exact", SUBSTITUTE: "Substitute", COMPLEMENT: "Complement", IRRELEVANT: "Irrelevant"}
REWRITE_GRADE_NAMES = ("irrelevant", "partial", "equivalent")
METRIC_PAGE = 10  # page size of the reward components (the evaluation's k)
MAX_SAMPLES = 64
RULE = "-" * 72


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: undecodable bytes (surrogate escapes from argv/stdin) become U+FFFD.

    >>> clean_text("caf\\udce9 ok")
    'caf\\ufffd ok'
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # lone surrogates outside the escape range
        return text.encode("utf-8", "replace").decode("utf-8")


def describe_intent(intent: Intent | None) -> str:
    """One line for the judge's parse: ``category | brand | attr=value, ...``."""
    if intent is None:
        return "none found (the judge reads no known category, or two values for one slot)"
    attrs = ", ".join(f"{a}={v}" for a, v in intent.attrs) or "no attributes"
    return f"category={intent.category} | brand={intent.brand or '-'} | {attrs}"


class Explainer:
    """A loaded run plus the world's search engine and shoppers: explains one query at a time."""

    def __init__(self, run, device, *, samples: int, temperature: float, k: int, seed: int,
                 gate: float | None = None, gate_query: str = "none", gate_judge: tuple = (None, "")):
        import torch  # here, not at the top: argument errors come back before torch loads

        self.run = run
        self.world = run.world
        self.rewriter = run.rewriter(device)
        self.ctx = Shop(run.world, k=METRIC_PAGE)
        self.tagger = tagger_source(run.config)
        self.samples, self.temperature, self.k = samples, temperature, k
        self.generator = torch.Generator().manual_seed(seed)  # the samples' only randomness
        self.gate, self.gate_query = gate, gate_query
        judge, self.gate_judge_name = gate_judge
        self.gate_scorer = self.rewriter if judge is None else judge

    def prepare(self, text: str) -> tuple[str, list[str]]:
        """(normalised query, notes); UserError when empty."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            query = self.rewriter.prepare([clean_text(text)])[0]
        notes = [f"{w.message} ({len(text):,} characters given)" for w in caught]
        return query, notes

    def rewrites(self, query: str) -> list[tuple[str, str]]:
        """[(label, rewrite)]: the greedy rewrite, then the samples."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the query is already within budget
            out = [("greedy", self.rewriter.rewrite([query])[0])]
            if self.samples:
                sampled = self.rewriter.rewrite([query], num_samples=self.samples, temperature=self.temperature,
                                                generator=self.generator)
                out += [(f"sample {i + 1}", r) for i, r in enumerate(sampled)]
        return out

    def explain(self, text: str) -> list[str]:
        """The report of one query (module docstring) as lines."""
        query, notes = self.prepare(text)
        intent = self.world.judge.parse(query)
        lines = [f"query:   {query!r}"] + [f"note: {n}" for n in notes]
        lines.append(f"intent:  {describe_intent(intent)}  (the judge's parse)")
        rewrites = self.rewrites(query)
        texts = [r for _, r in rewrites]
        probs = None
        if self.tagger is not None:
            probs = self.rewriter.relevance_probs([query] * len(texts), [r if r else "-" for r in texts]).numpy()
        metrics = baseline = None
        if intent is not None:
            q = Query(text=query, intent=intent, gold=render_canonical(self.world.lexicon, intent),
                      segment="user", split="user")
            metrics = rewrite_metrics(self.world, self.ctx.engine, self.ctx.users, [q] * len(texts), texts,
                                      k=METRIC_PAGE)
            baseline = rewrite_metrics(self.world, self.ctx.engine, self.ctx.users, [q], None, k=METRIC_PAGE)
        tag_note = {"sft": "", "sft init": " (trained by the SFT init; here in the GRPO policy's shared, updated "
                                           "weights)", None: ""}[self.tagger]
        lines.append(f"rewrites: tagger P(irrelevant/partial/equivalent){tag_note}; judge grade; conversion = "
                     f"expected purchases per user; recall@{METRIC_PAGE}; relevance@{METRIC_PAGE}")
        if baseline is not None:
            lines.append(f"  {'(none)':<9} page(q) alone: " + self._rewards(baseline, 0, with_grade=False))
        for i, (label, rewrite) in enumerate(rewrites):
            lines.append(f"  {label:<9} {rewrite!r}" + ("  (empty: the page is page(q))" if not rewrite else ""))
            parts = []
            if probs is not None:
                p = probs[i]
                parts.append(f"tagger {p[0]:.2f}/{p[1]:.2f}/{p[2]:.2f} -> {int(p.argmax())} "
                             f"{REWRITE_GRADE_NAMES[int(p.argmax())]}")
            else:
                parts.append("tagger: none (run trained without the relevance task)")
            parts.append(self._rewards(metrics, i) if metrics is not None else "rewards: n/a (no intent)")
            lines.append(" " * 12 + " | ".join(parts))
        greedy = rewrites[0][1]
        served = True
        if self.gate is not None:
            served, line = self.gate_decision(query, greedy)
            lines.append(line)
        page_size = max(self.k, METRIC_PAGE)
        before = self.ctx.engine.pages([query], None, page_size)[0]
        after = self.ctx.engine.pages([query], [greedy], page_size)[0]
        grades = self.world.judge.grade_products(intent) if intent is not None else None
        lines.append(f"results before: page(q), top {self.k}")
        lines += self._listing(before, grades, set())
        if served:
            lines.append(f"results after: page(q, greedy rewrite), top {self.k}  (+ = brought by the rewrite)")
            lines += self._listing(after, grades, set(before[:self.k].tolist()))
        else:
            lines.append("results after: the same, page(q) alone (the gate withheld the rewrite)")
        return lines

    def gate_decision(self, query: str, rewrite: str) -> tuple[bool, str]:
        """Whether the serving gate serves ``rewrite`` for ``query``, and the line that says why."""
        score = self.gate_scorer.gate_scores([query], [rewrite])[0]
        vouched = apply_gate([rewrite], [score], self.gate)[0] is not None
        why = [f"P(equivalent) {score:.3f} {'>' if vouched else '<='} {self.gate:g} ({self.gate_judge_name})"]
        passes = query_check_passes(self.ctx, self.gate_query, [query])[0]
        if self.gate_query == "dictionary":
            reading = self.ctx.dictionary.rewrite([query])[0]
            why.append(f"the shop reads {'a product' if passes else 'no catalog category or brand'} in the query "
                       f"(dictionary: {reading!r})")
        elif self.gate_query == "vocabulary":
            unknown = [w for w in query.split() if not self.ctx.knows_word(w)]
            why.append("the shop knows every word of the query" if passes else
                       f"the shop does not know {', '.join(map(repr, unknown))}")
        served = vouched and passes
        return served, f"gate:    greedy rewrite {'served' if served else 'withheld'}: " + "; ".join(why)

    @staticmethod
    def _rewards(metrics: dict, i: int, with_grade: bool = True) -> str:
        parts = []
        if with_grade:
            grade = int(metrics["grade"][i])
            parts.append(f"judge {grade} {REWRITE_GRADE_NAMES[grade]}")
        recall = metrics["recall"][i]
        parts += [f"conversion {metrics['ucvr'][i]:.3f}", "recall -" if np.isnan(recall) else f"recall {recall:.2f}",
                  f"relevance {metrics['relevance'][i]:.2f}"]
        return " | ".join(parts)

    def _listing(self, page: np.ndarray, grades: np.ndarray | None, before: set[int]) -> list[str]:
        ids = [int(p) for p in page[:self.k] if p >= 0]
        if not ids:
            return ["   (no results: no word of the query or rewrite is in any product title)"]
        out = []
        for rank, pid in enumerate(ids, 1):
            grade = PRODUCT_GRADE_NAMES[int(grades[pid])] if grades is not None else "-"
            mark = "+" if before and pid not in before else " "
            out.append(f"  {mark}{rank:>2}. {grade:<10} {self.world.titles[pid]}  #{pid}")
        return out


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m qrw.rewrite",
               description="Rewrite queries with a trained run: rewrites, their relevance tags and rewards, and the "
                           "search results before and after. Without queries, reads one query per line from stdin.")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="queries to rewrite (none: interactive)")
    p.add_argument("--ckpt", required=True, metavar="DIR", help="run directory (train_sft.py or train_grpo.py)")
    p.add_argument("--samples", type=int, default=0, help=f"sampled rewrites per query besides the greedy one "
                                                          f"(0 to {MAX_SAMPLES})")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of --samples (> 0)")
    p.add_argument("--k", type=int, default=5, help="results to list before and after (1 to 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled rewrites")
    p.add_argument("--gate", type=float, default=None, metavar="THRESHOLD",
                   help="serve the greedy rewrite only when the gate's tagger gives it P(equivalent) above "
                        "THRESHOLD in [0, 1] (python -m qrw.evaluate --gate auto chooses one on validation data)")
    p.add_argument("--gate-query", default="none", choices=list(GATE_QUERY_CHECKS),
                   help="--gate: also read the query: dictionary serves only when the dictionary fit on the logs "
                        "reads a catalog category or brand in it; vocabulary only when the shop knows every word "
                        "of it (one typo forgiven in words of 5+ letters)")
    p.add_argument("--gate-judge", default=None, metavar="RUN",
                   help="--gate: score with this finished run's tagger (default: the run's own; a GRPO run's SFT "
                        "init's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return p.parse_args(argv)


def _interactive(explainer: Explainer) -> None:
    """One query per stdin line until end of input; an empty line gets a note."""
    tty = sys.stdin.isatty()
    if tty:
        print(f"qrw rewriter: {run_name(explainer.run.config)} from {explainer.run.path}. "
              "One query per line; Ctrl-D quits.", file=sys.stderr)
    while True:
        if tty:
            print("query> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            if tty:
                print()
            return
        if not normalize_query(clean_text(line)):
            print("note: empty query: type a query, or end the input (Ctrl-D) to quit", flush=True)
            continue
        print("\n".join(explainer.explain(line.rstrip("\r\n")) + [RULE]), flush=True)


def main(argv=None) -> int:
    for stream, errors in ((sys.stdout, "backslashreplace"), (sys.stdin, "surrogateescape")):
        if hasattr(stream, "reconfigure"):  # never die on a character the terminal cannot show or send
            stream.reconfigure(errors=errors)
    args = parse_args(argv)
    check(0 <= args.samples <= MAX_SAMPLES, f"--samples must be between 0 and {MAX_SAMPLES} (got {args.samples})")
    check(args.temperature > 0, f"--temperature must be > 0 (got {args.temperature})")
    check(1 <= args.k <= 50, f"--k must be between 1 and 50 (got {args.k})")
    check(args.seed >= 0, f"--seed must be >= 0 (got {args.seed})")
    check(args.gate is None or 0.0 <= args.gate <= 1.0, f"--gate must be a threshold in [0, 1] (got {args.gate})")
    check(args.gate is not None or (args.gate_query == "none" and args.gate_judge is None),
          "--gate-query and --gate-judge need --gate THRESHOLD")
    for i, q in enumerate(args.queries):
        check(bool(normalize_query(clean_text(q))), f"query {i + 1} is empty (only whitespace)")
    device = resolve_device(args.device)
    from qrw.runs import load_run

    run = load_run(args.ckpt, device)
    judge = (None, "")
    if args.gate is not None:
        from qrw.evaluate import gate_judge

        check(tagger_source(run.config) is not None,
              f"--gate needs the relevance tagger, and {args.ckpt} was trained without the relevance task")
        judge, name = gate_judge(run, device, args.gate_judge)
        judge = (judge, name if judge is not None else "the run's own tagger")
    explainer = Explainer(run, device, samples=args.samples, temperature=args.temperature, k=args.k, seed=args.seed,
                          gate=args.gate, gate_query=args.gate_query, gate_judge=judge)
    try:
        if not args.queries:
            _interactive(explainer)
        for q in args.queries:
            print("\n".join(explainer.explain(q) + [RULE]), flush=True)
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly (and let the exit-time flush go nowhere)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    run_main(main)
