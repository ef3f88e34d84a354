"""The command line: `jaxcheck demo` and `jaxcheck run FILE.py[:NAME]` (also `python -m jaxcheck`).

`jaxcheck run` exits with 0 when every component passes, 1 when some component FAILs, 2 for bad
input (a missing file or name, wrong types, options or a loss `check` rejects), with a one-line
message and no traceback, and 3 when the file or the check raises anything else (with its
traceback, as that is a bug to look at, in the file or in jaxcheck).
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

OK, FAILED, BAD_INPUT, ERROR = 0, 1, 2, 3
NAMES = ("loss_fn", "params", "args", "grad_fn")

RUN_HELP = """\
FILE.py defines `loss_fn(params, *args)` (a scalar loss), `params` (a pytree), and optionally
`args` (a tuple of further arguments of loss_fn) and `grad_fn(params, *args)` (the gradient under
test; default jax.grad(loss_fn)). With FILE.py:NAME, NAME is a function of no arguments in the
file returning those as a dict {"loss_fn": ..., "params": ..., "args": ..., "grad_fn": ...} or a
tuple (loss_fn, params[, args[, grad_fn]]).

exit status: 0 every component passes, 1 some component FAILs, 2 bad input, 3 the file or the
check raised an unexpected error (traceback printed).
"""


class BadInput(Exception):
    """Input `jaxcheck run` cannot use; its message is printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcheck", description="Gradient checking for JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="check a correct and a buggy hand-written MLP backprop")
    run = sub.add_parser(
        "run", help="check the gradient defined in a Python file",
        description="Check the gradient of the loss defined in a Python file and print the "
                    "report.",
        epilog=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("target", metavar="FILE.py[:NAME]", help="the file, and optionally a "
                     "function in it returning the problem")
    run.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH "
                     "('-' for standard output, instead of the text report)")
    _add_options(run)
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        from .demo import run as run_demo

        return run_demo()
    return _run(ns)


def _add_options(run: argparse.ArgumentParser) -> None:
    from ..inputs.options import METHODS, MODES, PRECISIONS

    group = run.add_argument_group("check options (see jaxcheck.Options)")
    group.add_argument("--mode", choices=MODES, help="full (default), fast or sample")
    group.add_argument("--method", choices=METHODS, help="finite-difference method of full "
                       "mode (default central)")
    group.add_argument("--eps", type=float, help="relative base step (default: from the dtype)")
    group.add_argument("--batch-size", type=int, help="perturbations per compiled batch")
    group.add_argument("--precision", choices=PRECISIONS,
                       help="auto (default: float64 on CPUs and data-centre GPUs, else "
                       "native), float64 or native")
    group.add_argument("--safety", type=float, help="factor on the error estimate (default 3)")
    group.add_argument("--max-failures", type=int, help="rows of the printed failure table")
    group.add_argument("--seed", type=int, help="seed of the fast and sample modes")


def _options(ns: argparse.Namespace) -> dict[str, Any]:
    names = ("mode", "method", "eps", "batch_size", "precision", "safety", "max_failures", "seed")
    return {name: getattr(ns, name) for name in names if getattr(ns, name) is not None}


def _run(ns: argparse.Namespace) -> int:
    from ..api.check import check

    try:
        problem = load(ns.target)
        options = _options(ns)
    except BadInput as e:
        return _bad_input(str(e))
    except Exception:
        return _error(f"{ns.target} raised an error while loading")
    try:
        report = check(problem["loss_fn"], problem["params"], *problem["args"],
                       grad_fn=problem["grad_fn"], **options)
    except (ValueError, TypeError) as e:
        return _bad_input(f"{type(e).__name__}: {e}")
    except NotImplementedError as e:
        return _bad_input(f"not implemented yet: {e}")
    except Exception:
        return _error("the check raised an error")
    if ns.json == "-":
        print(report.to_json())
    else:
        print(report)
        if ns.json:
            try:
                with open(ns.json, "w", encoding="utf-8") as f:
                    f.write(report.to_json() + "\n")
            except OSError as e:
                return _bad_input(f"--json: cannot write {ns.json!r}: {e.strerror}")
    return OK if report.ok else FAILED


def _bad_input(message: str) -> int:
    print(f"jaxcheck run: error: {message}", file=sys.stderr)
    return BAD_INPUT


def _error(message: str) -> int:
    traceback.print_exc()
    print(f"jaxcheck run: error: {message} (traceback above)", file=sys.stderr)
    return ERROR


def split_target(target: str) -> tuple[str, str | None]:
    """`"dir/file.py:make"` → `("dir/file.py", "make")`; a target without `:NAME` → `(target,
    None)`. Only a trailing identifier counts as NAME, so `C:\\dir\\file.py` stays a path."""
    path, sep, name = target.rpartition(":")
    if sep and path and re.fullmatch(r"[A-Za-z_]\w*", name):
        return path, name
    return target, None


def load(target: str) -> dict[str, Any]:
    """Execute the file of `target` (`FILE.py[:NAME]`) and return its `loss_fn`, `params`, `args`
    (a tuple) and `grad_fn` (None for jax.grad), checked; raise `BadInput` naming what is wrong.
    """
    path, name = split_target(target)
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "no such file"
        raise BadInput(f"FILE: expected a Python file defining loss_fn and params, got {path!r} "
                       f"({what})")
    namespace = _execute(path)
    if name is None:
        missing = [n for n in ("loss_fn", "params") if n not in namespace]
        if missing:
            raise BadInput(f"{path} does not define {' and '.join(missing)}; expected top-level "
                           f"names loss_fn, params and optionally args, grad_fn"
                           f"{_did_you_mean(missing, namespace)} (or use FILE.py:NAME with a "
                           f"function NAME returning them)")
        found = {n: namespace[n] for n in NAMES if n in namespace}
        where = path
    else:
        found = _call(path, name, namespace)
        where = f"{path}:{name}"
    return _validate(found, where)


def _execute(path: str) -> dict[str, Any]:
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    module_name = f"_jaxcheck_run_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"FILE: cannot load {path!r} as Python; expected a .py file")
    module = importlib.util.module_from_spec(spec)
    # Registered (dataclasses look their module up) and run with its own folder importable,
    # like `python FILE.py`; not as __main__, so a script's main block does not run.
    sys.modules[module_name] = module
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise BadInput(f"{path}:{e.lineno}: SyntaxError: {e.msg}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return vars(module)


def _call(path: str, name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    if name not in namespace:
        functions = [n for n, v in namespace.items() if callable(v) and not n.startswith("_")]
        raise BadInput(f"{path} does not define {name!r}{_did_you_mean([name], functions)}")
    factory = namespace[name]
    if not callable(factory):
        raise BadInput(f"{path}:{name}: expected a function of no arguments returning loss_fn, "
                       f"params[, args, grad_fn], got {type(factory).__name__}")
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise BadInput(f"{path}:{name}: expected a function of no arguments, got "
                       f"{name}{inspect.signature(factory)}") from None
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    made = factory()
    if isinstance(made, dict):
        unknown = [k for k in made if k not in NAMES]
        if unknown:
            raise BadInput(f"{path}:{name}() returned unknown keys {unknown}"
                           f"{_did_you_mean(unknown, NAMES)}; expected {list(NAMES)}")
        missing = [n for n in ("loss_fn", "params") if n not in made]
        if missing:
            raise BadInput(f"{path}:{name}() returned no {' and '.join(missing)}; expected a "
                           f"dict with keys {list(NAMES)}")
        return made
    if isinstance(made, tuple) and 2 <= len(made) <= 4:
        return dict(zip(NAMES, made))
    got = f"a tuple of {len(made)}" if isinstance(made, tuple) else type(made).__name__
    raise BadInput(f"{path}:{name}() returned {got}; expected a dict with keys {list(NAMES)} or "
                   f"a tuple (loss_fn, params[, args[, grad_fn]])")


def _validate(found: dict[str, Any], where: str) -> dict[str, Any]:
    loss_fn, args, grad_fn = found["loss_fn"], found.get("args", ()), found.get("grad_fn")
    if not callable(loss_fn):
        raise BadInput(f"{where}: loss_fn: expected a function loss_fn(params, *args), got "
                       f"{type(loss_fn).__name__}")
    if isinstance(args, list):
        args = tuple(args)
    if not isinstance(args, tuple):
        raise BadInput(f"{where}: args: expected a tuple of the further arguments of loss_fn "
                       f"(write args = (x,) for one), got {type(args).__name__}")
    if grad_fn is not None and not callable(grad_fn):
        raise BadInput(f"{where}: grad_fn: expected a function grad_fn(params, *args) or None, "
                       f"got {type(grad_fn).__name__}")
    return {"loss_fn": loss_fn, "params": found["params"], "args": args, "grad_fn": grad_fn}


def _did_you_mean(names: Sequence[str], candidates: Any) -> str:
    for n in names:
        close = difflib.get_close_matches(n, [str(c) for c in candidates], n=1)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""


if __name__ == "__main__":
    sys.exit(main())
