from __future__ import annotations

import sys

import pytest

from taxonomist import cli

from .bad_input_cases import CASES, Case


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["taxonomist", *argv])
    monkeypatch.setenv("COLUMNS", "400")
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_clear_message(case: Case, tmp_path, capsys, monkeypatch) -> None:
    argv = case.setup(tmp_path)
    code, output = run_cli(argv, capsys, monkeypatch)
    flat = " ".join(output.split())
    assert case.expect in flat, output
    assert code == case.code, output
    assert "Traceback" not in output
    assert "pickle executed" not in output


def test_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15
