import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from jaxcheck.tools.cli import main, split_target

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "regression.py")


def write(tmp_path, source: str, name: str = "problem.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


PROBLEM = """
import jax.numpy as jnp

def loss_fn(w, x):
    return jnp.sum(jnp.sin(w) * x)

params = jnp.linspace(-1.0, 1.0, 4)
args = (jnp.arange(4.0),)
"""


def test_run_correct_gradient_exits_0_and_prints_report(capsys):
    assert main(["run", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jaxcheck: OK - all 8 components within tolerance")
    assert "['W']  (3, 2)" in out


def test_run_named_function_with_buggy_gradient_exits_1_and_localises(capsys):
    assert main(["run", f"{EXAMPLE}:buggy"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("jaxcheck: FAIL - 1 of 8 components outside tolerance, worst ['b'][1]")
    assert re.search(r"\['b'\]\[1\]\s+-3\.911311e-01\s+-3\.87", out)


def test_run_without_grad_fn_checks_jax_grad(tmp_path, capsys):
    assert main(["run", write(tmp_path, PROBLEM)]) == 0
    assert "all 4 components" in capsys.readouterr().out


def test_json_option_writes_the_report_schema(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["run", f"{EXAMPLE}:buggy", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["schema"] == "jaxcheck.report/1" and data["ok"] is False
    assert data["failures"][0]["path"] == "['b']" and data["failures"][0]["index"] == [1]
    assert "FAIL" in capsys.readouterr().out     # the text report is still printed


def test_json_to_stdout_replaces_the_text(capsys):
    assert main(["run", EXAMPLE, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_options_map_to_check_options(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["run", EXAMPLE, "--eps", "1e-4", "--batch-size", "3", "--precision", "native",
                 "--safety", "5", "--mode", "full", "--method", "central", "--json", str(out)])
    assert code == 0
    info = json.loads(out.read_text())["info"]
    assert info["rel_step"] == 1e-4 and info["precision"] == "native"
    assert info["mode"] == "full" and info["method"] == "central"


def test_precision_defaults_to_auto_and_accepts_it(tmp_path, capsys):
    for argv in ([], ["--precision", "auto"]):
        out = tmp_path / "r.json"
        assert main(["run", EXAMPLE, *argv, "--json", str(out)]) == 0
        info = json.loads(out.read_text())["info"]
        assert info["precision_requested"] == "auto"
        assert info["precision"] in ("float64", "native")


def test_max_failures_limits_printed_rows(capsys):
    assert main(["run", f"{EXAMPLE}:buggy", "--max-failures", "0"]) == 1
    assert "worst components" not in capsys.readouterr().out


@pytest.mark.parametrize("source, target_suffix, message", [
    (None, "", "no such file"),
    ("x = 1\n", "", "does not define loss_fn and params"),
    ("loss_fn = 1\nparams = 2\n", "", "loss_fn: expected a function"),
    (PROBLEM.replace("args = (jnp.arange(4.0),)", "args = jnp.arange(4.0)"), "",
     "args: expected a tuple"),
    (PROBLEM + "grad_fn = 'g'\n", "", "grad_fn: expected a function"),
    (PROBLEM, ":make", "does not define 'make'"),
    (PROBLEM + "make = 3\n", ":make", "expected a function of no arguments"),
    (PROBLEM + "def make(seed):\n    pass\n", ":make", "no arguments, got make(seed)"),
    (PROBLEM + "def make():\n    return [loss_fn]\n", ":make", "returned list"),
    (PROBLEM + "def make():\n    return {'loss': loss_fn, 'params': params}\n", ":make",
     "unknown keys ['loss'] (did you mean 'loss_fn'?)"),
    (PROBLEM + "def make():\n    return {'loss_fn': loss_fn}\n", ":make", "returned no params"),
    ("def f(:\n", "", "SyntaxError"),
    (PROBLEM.replace("return jnp.sum(", "return ("), "", "real scalar loss"),
    (PROBLEM.replace("params = jnp.linspace(-1.0, 1.0, 4)", "params = {'n': 3}"), "",
     "params: expected a pytree with at least one floating-point array"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, capsys, source,
                                                           target_suffix, message):
    path = write(tmp_path, source) if source is not None else str(tmp_path / "missing.py")
    assert main(["run", path + target_suffix]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxcheck run: error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("options, message", [
    (["--eps", "2"], "eps: expected a float in (0, 1)"),
    (["--batch-size", "0"], "batch_size: expected a positive int"),
])
def test_invalid_option_values_exit_2(capsys, options, message):
    assert main(["run", EXAMPLE, *options]) == 2
    assert message in capsys.readouterr().err


def test_not_implemented_method_exits_2(capsys):
    # Implemented modes/methods pass; one that is not yet raises NotImplementedError → exit 2.
    code = main(["run", EXAMPLE, "--method", "complex"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert "not implemented yet" in err and "Traceback" not in err


def test_unknown_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", EXAMPLE, "--mode", "quick"])
    assert info.value.code == 2
    assert "invalid choice: 'quick'" in capsys.readouterr().err


def test_error_raised_by_the_file_exits_3_with_its_traceback(tmp_path, capsys):
    path = write(tmp_path, "import jax\nraise RuntimeError('no data here')\n")
    assert main(["run", path]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: no data here" in err


def test_file_imports_its_neighbours(tmp_path, capsys):
    write(tmp_path, PROBLEM, "shared_model.py")
    path = write(tmp_path, "from shared_model import loss_fn, params, args\n")
    assert main(["run", path]) == 0
    assert str(tmp_path) not in sys.path


def test_split_target_keeps_windows_drive_paths():
    assert split_target("dir/f.py:make") == ("dir/f.py", "make")
    assert split_target("dir/f.py") == ("dir/f.py", None)
    assert split_target(r"C:\dir\f.py") == (r"C:\dir\f.py", None)


def test_demo_command_exits_0(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "== correct hand-written backprop ==" in out and "worst ['b1'][3]" in out


def test_python_dash_m_jaxcheck_runs_in_a_subprocess(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "jaxcheck", "run", f"{EXAMPLE}:buggy", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "worst ['b'][1]" in done.stdout
    assert json.loads(out.read_text())["n_fail"] == 1


def test_the_guides_ci_commands_exit_as_documented(tmp_path, monkeypatch, capsys):
    section = (ROOT / "docs" / "guide" / "ci-pytest-cli.md").read_text()
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = [ln for ln in block.splitlines() if ln.startswith("jaxcheck run")]
    assert len(lines) == 2
    monkeypatch.chdir(ROOT)
    for line in lines:
        command, comment = line.split("#", 1)
        expected = int(re.search(r"exit (\d)", comment).group(1))
        argv = shlex.split(command)[1:]
        if "--json" in argv:                       # keep the working tree clean
            argv[argv.index("--json") + 1] = str(tmp_path / "gradcheck.json")
        assert main(argv) == expected, line
    assert json.loads((tmp_path / "gradcheck.json").read_text())["ok"] is True
