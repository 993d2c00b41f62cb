"""Checkpoints: atomic writes, weights_only loads, one-line errors for every user-caused failure."""

import os

import pytest
import torch

from qrw.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint, write_json
from qrw.config import UserError


def state():
    return {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 7, "stage": "sft",
            "model_config": {"n_layer": 2, "d_model": 32}, "tokenizer_sha256": "abc"}


def test_round_trip_with_format_version(tmp_path):
    save_checkpoint(tmp_path / "ckpt.pt", state())
    loaded = load_checkpoint(tmp_path, expect_model_config={"n_layer": 2, "d_model": 32},
                             expect_tokenizer_sha256="abc")
    assert loaded["format_version"] == FORMAT_VERSION and loaded["step"] == 7
    torch.testing.assert_close(loaded["model"]["w"], torch.arange(6.0).view(2, 3))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="missing checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_garbage_checkpoints(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupted or truncated") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)  # not torch's advice to load the file unsafely


class RunsCode:
    """Unpickles as a call to os.system: what a malicious checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Custom:
    """A class of the saving program: not a plain value."""


def test_checkpoint_refuses_pickled_code(tmp_path):
    """weights_only=True: a file holding objects other than tensors and plain values is refused unrun, and said so."""
    path = tmp_path / "ckpt.pt"
    for payload, name in ((os.system, "posix.system"), (RunsCode(tmp_path / "ran"), "posix.system"),
                          (Custom(), f"{__name__}.Custom")):
        torch.save({"format_version": FORMAT_VERSION, "payload": payload}, path)
        with pytest.raises(UserError) as error:
            load_checkpoint(path)
        assert str(error.value) == (
            f"unsafe checkpoint {path}: it holds objects that safe loading (weights_only) refuses ({name}); "
            f"a qrw checkpoint holds only tensors and plain values. Nothing in it was run")
    assert not (tmp_path / "ran").exists()


def test_mismatched_config_tokenizer_and_version(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state())
    with pytest.raises(UserError, match="another model config .*d_model"):
        load_checkpoint(path, expect_model_config={"n_layer": 2, "d_model": 64})
    with pytest.raises(UserError, match="another tokenizer"):
        load_checkpoint(path, expect_tokenizer_sha256="def")
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(UserError, match="format version"):
        load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    """A crash mid-save (simulated: half the bytes written, then an error) leaves the last good checkpoint."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state())
    before = path.read_bytes()

    def crashing_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(before[: len(before) // 3])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**state(), "step": 8})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_write_json_is_sorted_and_atomic(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 2})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
