"""Suite-wide settings: torch runs single-threaded in tests.

The suite's models are tiny: a second thread buys nothing and, on a 2-core
machine shared with the subprocesses some tests start, oversubscription can make
a 0.4 s test take 10 s. Results do not depend on it (every test seeds itself).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(main, *argv)``: run a CLI's ``main`` in-process as its ``python -m`` entry point would,
    expect a user error (exit code 2), and return its one stderr line."""
    from qrw.config import run_main

    def error_line(main, *argv: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run_main(lambda: main(list(argv)))
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    return error_line


@pytest.fixture(scope="session")
def smoke_sft_run(tmp_path_factory):
    """One finished ``train_sft.py --smoke`` run directory, shared by the tests that only read it."""
    import train_sft

    out = tmp_path_factory.mktemp("shared") / "smoke-sft"
    assert train_sft.main(["--smoke", "--quiet", "--out", str(out), "--device", "cpu"]) == 0
    return out
