"""Train and evaluate the grid of the paper's comparisons over seeds, then write docs/RESULTS.md.

    python -m qrw.reproduce --seeds 3           # every arm with seeds 0, 1, 2
    python -m qrw.reproduce                     # one seed (seed 0)
    python -m qrw.reproduce --quick             # shorter training everywhere: checks the pipeline, not the claims
    python -m qrw.reproduce --arms sft-multi,sft-single --seeds 2    # a subset of the arms (their inits added)

Arms (:data:`GRID`; one line each to add another), all on each seed's held-out test queries:

    no rewrite, dictionary (fit on the logs)  baselines (no training)
    gold-dictionary, gold                     baselines that read the gold rewrites (upper bounds)
    multi-task SFT                            train_sft.py                    (rewrite + relevance tagging)
    single-task SFT                           train_sft.py --tasks rewrite
    multi-task SFT, no pretraining            train_sft.py --no-pretrain
    GRPO fusion / relevance / conversion      train_grpo.py --reward R        (from the multi-task SFT run)
    GRPO fusion, no rules                     train_grpo.py --rules none      (what the rule rewards do)
    single-task SFT, gold pairs               train_sft.py --tasks rewrite --rewrite-data gold    (upper bound)
    multi-task SFT, gold-built relevance      train_sft.py --relevance-data production            (upper bound)
    GRPO fusion, oracle relevance             train_grpo.py --relevance-judge oracle              (upper bound)
    GRPO fusion, oracle conversion            train_grpo.py --conversion-judge oracle             (upper bound)

The scripts' defaults are the production regime, behind the hidden truth's wall
(:mod:`qrw.shop.wall`): SFT learns mined rewrite pairs (with their drift) and relevance
labels bought through the annotation door within a label budget; GRPO's relevance reward
is the frozen SFT model's tagger plus rules that read the dictionary fit on the logs, its
conversion reward a model fit on the logged sessions. The upper bounds each swap in one
piece of the hidden truth (gold rewrites, relevance pairs built from gold and labelled by
the judge, the judge's grades as the relevance reward, the shopper simulator's expected
purchases as the conversion reward) and record the crossing. The report opens with what
of the hidden truth each run used: its labels bought, the budget, the annotators'
disagreement and every named crossing, from its ``metrics.json["wall"]``.

Seeds: ``--seeds N`` trains every arm with seeds S .. S+N-1 (S = ``--seed``), each run
a subprocess writing ``OUT/seed-S/NAME`` (its output in ``OUT/seed-S/NAME.log``), one
seed included: the layout does not depend on N. A finished run is reused (``--force``
retrains; a run that trained before the wall, with no ``wall`` record, is retrained),
so an interrupted grid continues where it stopped. The seed is the
run's whole seed: the world (``WorldConfig.seed``), hence its test queries, the model
initialisation, the data order and GRPO's sampling, so the seeds are independent
replicates of the experiment.

Splitting the grid across sessions: each call trains only its own seeds, so

    python -m qrw.reproduce --seed 1 --seeds 1 --train-only    # session A: seed 1's runs only
    python -m qrw.reproduce --seed 2 --seeds 1 --train-only    # session B: seed 2's runs only
    python -m qrw.reproduce --seeds 3                          # then: trains what is missing (seed 0 here),
                                                               # reuses the rest, writes the 3-seed report

(same ``--out``; ``--train-only`` skips the evaluation and the report, which a call
without it writes for its own seeds only, over docs/RESULTS.md).

The report gives each seed's rows, and for every comparison the claims use the
paired difference pooled over seeds with its 95% interval (:mod:`qrw.shop.pooled`:
the mean over seeds of each seed's mean per-query difference, a t interval over the
seed means; one seed: the per-query paired interval), each seed's
difference beside it, the claims judged on the pooled intervals, the trained arms
minus the dictionary fit on the logs (all test queries, the tail, the unseen intents),
GRPO minus its SFT init and where it loses, the upper bounds' readings, the serving
gate on the out-of-domain searches the logs hold and on never-logged nouns, the SFT arms'
training against validation loss (:mod:`qrw.curves`), and how long it all took;
``OUT/results.json`` holds the same numbers (``vs_dictionary``: arm -> subset -> metric;
``wall_by_seed``: each run's wall record). Training curves are drawn to ``docs/``
when matplotlib is installed (the optional ``plot`` extra).

The package, by concern:

- :mod:`qrw.reproduce.grid`: the arms (:data:`GRID`) and their training over seeds;
- :mod:`qrw.reproduce.evaluation`: each seed's runs scored, pooled over seeds;
- :mod:`qrw.reproduce.claims`: the paper's claims judged from the pooled intervals;
- :mod:`qrw.reproduce.readings`: the report's readings: the wall, GRPO against its init and the log-fit
  dictionary, the upper bounds;
- :mod:`qrw.reproduce.report`: docs/RESULTS.md's tables and figures, assembled;
- :mod:`qrw.reproduce.cli`: the command (``python -m qrw.reproduce``, :mod:`qrw.reproduce.__main__`).
"""

from qrw.reproduce.claims import _seeds_agree_text, check_claims, ci_text, verdict
from qrw.reproduce.cli import main, parse_args
from qrw.reproduce.evaluation import (GATE_ARMS, GridEvaluation, SeedEvaluation, evaluate_grid, evaluate_seed,
                                      mean_rows, pooled_comparison)
from qrw.reproduce.grid import (BOUND_PAIRS, CLAIM_PAIRS, DEFAULT_ARMS, GRID, LABELS, Arm, command_of, grid_command,
                                selected_arms, train, train_all)
from qrw.reproduce.readings import grpo_lines, regime_lines, vs_dictionary_table, wall_lines
from qrw.reproduce.report import gate_lines, plot_curves, report, trailing_mean
