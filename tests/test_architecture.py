"""The habits that keep the pipeline readable, as tests that fail when one is broken.

The import layers and the absence of cycles are import-linter contracts (`pyproject.toml`,
run by `.ci/run`); here: what tests import, where batched programs are compiled, and that the
public API is exactly `jaxcheck.__all__`.

Tests in `tests/` use the public API only (`jaxcheck.<name in __all__>` and the plugin's
`jaxcheck.pytest_plugin`), so a refactoring of the stages never touches them. White-box
tests of a stage's modules live in `tests/internal/` and import them by their stage path,
never a private (`_`) module or name.
"""
import ast
import pathlib

import jaxcheck

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = pathlib.Path(jaxcheck.__file__).resolve().parent   # the tested one (CI: the wheel)


def _stage_imports(path: pathlib.Path) -> list[str]:
    """`jaxcheck` imports in a file other than `jaxcheck` and `jaxcheck.pytest_plugin`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                   [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found += [f"{path.name}:{node.lineno} {m}" for m in modules
                  if m.startswith("jaxcheck.") and m != "jaxcheck.pytest_plugin"]
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "jaxcheck" and node.attr not in jaxcheck.__all__
                and node.attr not in ("pytest_plugin", "__all__", "__version__", "__file__")):
            found.append(f"{path.name}:{node.lineno} jaxcheck.{node.attr}")
    return found


def test_public_tests_use_the_public_api_only():
    offenders = [f for path in sorted((ROOT / "tests").glob("*.py"))
                 if path.name != "test_architecture.py" for f in _stage_imports(path)]
    assert offenders == []


def test_the_stage_import_scan_sees_stage_modules(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("\n".join(["import jaxcheck", "from jaxcheck.evaluation import engine",
                                  "import jaxcheck.pytest_plugin", "jaxcheck.numerics",
                                  "jaxcheck.check"]))
    assert len(_stage_imports(sample)) == 2


def _private_imports(path: pathlib.Path) -> list[str]:
    """`jaxcheck` imports in a file that name a private module or a private name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxcheck"):
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                found.append(f"{path.name}:{node.lineno} from {node.module} import {names}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxcheck") and any(
                        p.startswith("_") for p in a.name.split(".")):
                    found.append(f"{path.name}:{node.lineno} import {a.name}")
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__")
              and isinstance(node.value, ast.Name) and node.value.id == "jaxcheck"):
            found.append(f"{path.name}:{node.lineno} jaxcheck.{node.attr}")
    return found


def test_tests_import_no_private_module_or_name():
    offenders = [f for path in sorted((ROOT / "tests").rglob("*.py"))
                 for f in _private_imports(path)]
    assert offenders == []


def test_the_private_import_scan_sees_private_names(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from jaxcheck._engine import evaluate\nfrom jaxcheck.numerics.joint "
                      "import _exact\nimport jaxcheck._x\nimport jaxcheck\njaxcheck._fast\n")
    assert len(_private_imports(sample)) == 4


def _is_jit(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return "jax.jit" in text or text == "jit"


def _batched_jit_functions(path: pathlib.Path) -> list[str]:
    """Functions compiled with `jax.jit` in `path` whose body maps over a batch."""
    tree = ast.parse(path.read_text())
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    jitted = [n for n in functions.values() if any(_is_jit(d) for d in n.decorator_list)]
    for node in ast.walk(tree):  # f = jax.jit(g, ...)
        if isinstance(node, ast.Call) and _is_jit(node.func) and node.args:
            target = node.args[0]
            if isinstance(target, ast.Name) and target.id in functions:
                jitted.append(functions[target.id])
    batched = ("vmap", "lax.map", "fori_loop", "scan")
    return [f"{path.relative_to(PACKAGE.parent)}:{f.name}" for f in jitted
            if any(b in ast.unparse(f) for b in batched)]


def test_only_the_engine_compiles_batched_evaluations():
    engine = PACKAGE / "evaluation" / "engine.py"
    offenders = [f for path in sorted(PACKAGE.rglob("*.py")) if path != engine
                 for f in _batched_jit_functions(path)]
    assert offenders == []
    # `_compiler` lowers too: it holds the XLA options every compile passes (and tries them
    # on a tiny program); it compiles no batch of its own (the scan above)
    options = PACKAGE / "_compiler.py"
    lowered = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
               if p not in (engine, options)
               and (".lower(" in p.read_text() or ".compile()" in p.read_text())]
    assert lowered == []
    assert _batched_jit_functions(engine)  # the scan sees the engine's own program


def test_public_api_is_exactly_all():
    public = {n for n in dir(jaxcheck) if n.isidentifier() and not n.startswith("_")}
    stages = {"api", "evaluation", "inputs", "numerics", "plan", "report", "rules", "tools",
              "pytest_plugin"}
    assert public - stages == set(jaxcheck.__all__)
    assert all(getattr(jaxcheck, n).__doc__ for n in jaxcheck.__all__)


def test_every_stage_package_says_what_it_owns():
    for stage in ("inputs", "plan", "evaluation", "numerics", "rules", "report", "api",
                  "tools"):
        doc = (PACKAGE / stage / "__init__.py").read_text()
        assert len(doc.strip()) > 80, stage
