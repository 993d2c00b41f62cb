"""``python -m qrw.bench COMMAND``: see :mod:`qrw.bench.cli`."""

from qrw.bench.cli import main
from qrw.config import run_main

run_main(main)
