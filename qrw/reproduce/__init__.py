"""Train and evaluate the grid of the paper's comparisons over seeds, then write docs/RESULTS.md.

    python -m qrw.reproduce --seeds 3           # every arm with seeds 0, 1, 2
    python -m qrw.reproduce                     # one seed (seed 0)
    python -m qrw.reproduce --quick             # shorter training everywhere: checks the pipeline, not the claims
    python -m qrw.reproduce --arms sft-multi,sft-single --seeds 2    # a subset of the arms (their inits added)

Arms (:data:`GRID`; one line each to add another), all on each seed's held-out test queries:

    no rewrite, dictionary, gold              baselines (no training)
    multi-task SFT                            train_sft.py                    (rewrite + relevance tagging)
    single-task SFT                           train_sft.py --tasks rewrite
    multi-task SFT, no pretraining            train_sft.py --no-pretrain
    single-task SFT, gold pairs               train_sft.py --tasks rewrite --rewrite-data gold    (upper bound)
    GRPO fusion / relevance / conversion      train_grpo.py --reward R        (from the multi-task SFT run)
    GRPO fusion, no rules                     train_grpo.py --rules none      (what the rule rewards do)
    GRPO fusion, oracle relevance             train_grpo.py --relevance-judge oracle              (upper bound)

The scripts' defaults are the production regime: SFT learns mined rewrite pairs (with their
drift) and relevance labels of what production would label; GRPO's relevance reward is the
frozen SFT model's tagger plus rule rewards (its conversion reward, though, is still the
simulator's expected purchases: the hidden truth's wall is not built yet). The upper bounds swap in
what production does not have: gold rewrites, the evaluation's own judge as the reward.

Seeds: ``--seeds N`` trains every arm with seeds S .. S+N-1 (S = ``--seed``), each run
a subprocess writing ``OUT/seed-S/NAME`` (its output in ``OUT/seed-S/NAME.log``), one
seed included: the layout does not depend on N. A finished run is reused, so an
interrupted grid continues where it stopped (``--force`` retrains). The seed is the
run's whole seed: the world (``WorldConfig.seed``), hence its test queries, the model
initialisation, the data order and GRPO's sampling, so the seeds are independent
replicates of the experiment.

The report gives each seed's rows, and for every comparison the claims use the
paired difference pooled over seeds with its 95% interval (:mod:`qrw.shop.pooled`:
the mean over seeds of each seed's mean per-query difference, a t interval over the
seed means; one seed: the per-query paired interval), each seed's
difference beside it, the claims judged on the pooled intervals, the SFT arms'
training against validation loss (:mod:`qrw.curves`), and how long it all took;
``OUT/results.json`` holds the same numbers. Training curves are drawn to ``docs/``
when matplotlib is installed (the optional ``plot`` extra).

The package, by concern:

- :mod:`qrw.reproduce.grid`: the arms (:data:`GRID`) and their training over seeds;
- :mod:`qrw.reproduce.evaluation`: each seed's runs scored, pooled over seeds;
- :mod:`qrw.reproduce.claims`: the paper's claims judged from the pooled intervals;
- :mod:`qrw.reproduce.report`: docs/RESULTS.md's tables, readings and figures;
- :mod:`qrw.reproduce.cli`: the command (``python -m qrw.reproduce``, :mod:`qrw.reproduce.__main__`).
"""

from qrw.reproduce.claims import _seeds_agree_text, check_claims, ci_text, verdict
from qrw.reproduce.cli import main, parse_args
from qrw.reproduce.evaluation import (GATE_ARMS, GridEvaluation, SeedEvaluation, evaluate_grid, evaluate_seed,
                                      mean_rows, pooled_comparison)
from qrw.reproduce.grid import (BOUND_PAIRS, CLAIM_PAIRS, GRID, LABELS, Arm, command_of, grid_command, selected_arms,
                                train, train_all)
from qrw.reproduce.report import plot_curves, regime_lines, report, trailing_mean
