"""Fast mode on a 100.6M-parameter float32 model sharded over 8 forced CPU devices
(`bench/large_model.py`): the correct gradient passes, one entry off by 1% is named exactly.
Slow (minutes, several GB): run with `python -m pytest -m slow tests/test_large_model.py`."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_fast_mode_on_a_sharded_100m_parameter_model(tmp_path):
    out = tmp_path / "large.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "large_model.py"),
                          "--no-write", "--json", str(out)],
                         env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["n"] >= 100_000_000 and result["devices"] == 8
    correct, *wrong = result["rows"]
    assert correct["ok"] and correct["failures"] == []
    largest = next(row for row in wrong if "largest" in row["case"])
    assert not largest["ok"] and largest["failures"] == largest["expected"]
    for row in wrong:   # never a wrong location, whatever is found
        assert set(row["failures"]) <= set(row["expected"])
