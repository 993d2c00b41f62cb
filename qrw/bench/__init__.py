"""Benchmark and measurement commands (``python -m qrw.bench ...``): not part of the library.

The library (``qrw/`` above this folder) trains and evaluates; the modules here only
measure it:

- :mod:`qrw.bench.cli`: ``python -m qrw.bench generate|train|profile|compare``, the dispatcher
  and the generation and training-step timings;
- :mod:`qrw.bench.profile`: every stage's seconds a step, matmul share and FLOP rate;
- :mod:`qrw.bench.compare`: qrw beside HF transformers and TRL at the same shapes;
- :mod:`qrw.bench.mutation`: ``python -m qrw.bench.mutation``, the tests' mutation score over
  the method's math (targets and equivalent mutants in :mod:`qrw.bench.mutation_targets`);
- :mod:`qrw.bench.conversion`: ``python -m qrw.bench.conversion``, a conversion model fit on logs only,
  its AUC and calibration against the simulator on held-out sessions;
- :mod:`qrw.bench.preempt`: ``python -m qrw.bench.preempt``, stop signals at random moments of each
  stage, then ``--resume``: steps redone and bitwise equality, over many trials.
"""
