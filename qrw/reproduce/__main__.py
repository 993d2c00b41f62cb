"""``python -m qrw.reproduce``: see :mod:`qrw.reproduce.cli`."""

from qrw.config import run_main
from qrw.reproduce.cli import main

if __name__ == "__main__":
    run_main(main)
