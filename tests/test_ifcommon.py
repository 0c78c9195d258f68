"""The shared helpers: atomic writes, the array cache, the one error path of command lines."""
import os

import numpy as np
import pytest

from ifcommon import UserError, atomic_write, cached_arrays, command_line


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), failing)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_cached_arrays_compute_once_then_load_and_recompute_a_damaged_entry(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5.0)}

    for _ in range(2):
        np.testing.assert_array_equal(cached_arrays("thing", b"key", compute)["x"], np.arange(5.0))
    assert len(calls) == 1
    cached_arrays("thing", b"other key", compute)
    assert len(calls) == 2
    for entry in (tmp_path / "interfusion_jax" / "arrays").iterdir():
        entry.write_bytes(b"not an npz")
    np.testing.assert_array_equal(cached_arrays("thing", b"key", compute)["x"], np.arange(5.0))
    assert len(calls) == 3


@pytest.mark.parametrize("raised, status, line", [
    (UserError("--flag x: no such file"), 2, "error: --flag x: no such file"),
    (FileNotFoundError("missing.npz not found"), 2, "error: missing.npz not found"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_command_line_turns_user_errors_into_one_line(raised, status, line, capsys):
    @command_line
    def main(argv):
        raise raised

    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == status
    assert capsys.readouterr().err == line + "\n"


def test_command_line_passes_the_status_and_keeps_bugs_loud():
    assert command_line(lambda argv: 0)([]) is None
    with pytest.raises(SystemExit) as e:
        command_line(lambda argv: 3)([])
    assert e.value.code == 3
    with pytest.raises(ZeroDivisionError):
        command_line(lambda argv: 1 / 0)([])
