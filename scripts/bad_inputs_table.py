"""Write docs/bad-inputs.md from the real messages of tests/bad_input_cases.py.

    python scripts/bad_inputs_table.py
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bad_input_cases import CASES  # noqa: E402

from taxonomist import cli  # noqa: E402


def run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    old_argv = sys.argv
    sys.argv = ["taxonomist", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old_argv
    return code, buf.getvalue()


def main() -> None:
    os.environ["COLUMNS"] = "400"
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            code, output = run(case.setup(Path(tmp)))
        lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
        shown = next((ln for ln in lines if case.expect[:40] in ln), lines[0] if lines else "")
        shown = shown.replace(tmp, "…").replace("|", "\\|")
        action = "rejected, exit 1" if code else "reported, run continues"
        rows.append(f"| {case.what} | {action} | `{shown[:400]}` | `{case.name}` |")
    text = (
        "# Bad inputs and what the user sees\n\n"
        "Each row is a test (`tests/test_bad_inputs.py`, cases in `tests/bad_input_cases.py`); this table is written\n"
        "from the real output by `python scripts/bad_inputs_table.py`. Rows that are skipped are never dropped\n"
        "silently: the run prints their count and first row numbers, and `--strict` turns them into a rejection.\n\n"
        "| input | outcome | message (CLI output, one line) | test case |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    (ROOT / "docs" / "bad-inputs.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
