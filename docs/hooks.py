"""mkdocs hooks: the notebooks and the plots become pages and images of the site at build time.

- `notebooks/*.ipynb` are added as they are committed (executed by tests/test_notebooks.py;
  mkdocs-jupyter renders them without running them again).
- The images the guide shows are drawn here, by jaxcheck itself, on every build, so they
  can never drift from what the code does: `plots/report.png` (`Report.plot()` of the quick
  start's report), `plots/sweep.png` (`Sweep.plot()`, the ε V-curves) and `plots/health.png`
  (what `jaxcheck.health` measures over a short training run).
"""
from __future__ import annotations

import io
import pathlib
import re

import matplotlib

matplotlib.use("Agg")   # no display: the build draws into PNG bytes

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

import jaxcheck

ROOT = pathlib.Path(__file__).resolve().parent.parent


# `--8<-- "FILE"` or `--8<-- "FILE:NAME"` alone on a line: FILE (relative to the repository),
# or its lines between the markers `--8<-- [start:NAME]` and `--8<-- [end:NAME]`. The landing
# page takes its text from the README, so the two cannot drift apart.
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$', re.M)


def include(match: re.Match) -> str:
    text = (ROOT / match[1]).read_text()
    if match[2] is None:
        return text
    start, end = f"--8<-- [start:{match[2]}]", f"--8<-- [end:{match[2]}]"
    if start not in text or end not in text:
        raise ValueError(f"{match[1]} has no section {match[2]!r} (markers {start}, {end})")
    body = text[text.index("\n", text.index(start)) + 1:text.index(end)]
    return body[:body.rindex("\n") + 1]   # without the end marker's line


def on_page_markdown(markdown: str, **_) -> str:
    """Included files expanded; doctested examples read as console sessions (prompts and
    output told apart), doctest's `<BLANKLINE>` shown as the blank line it stands for."""
    markdown = INCLUDE.sub(include, markdown)
    return markdown.replace("```python\n>>> ", "```pycon\n>>> ").replace("<BLANKLINE>", "")


@event_priority(100)   # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", str(ROOT), config["site_dir"],
                          config["use_directory_urls"]))
    for name, draw in (("report", report_figure), ("sweep", sweep_figure),
                       ("health", health_figure)):
        files.append(File.generated(config, f"plots/{name}.png", content=png(draw())))
    return files


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def report_figure() -> Figure:
    """The quick start's check: a hand-written backprop with one wrong entry of `b`."""
    def loss(params, x, y):
        pred = jnp.tanh(x @ params["W"] + params["b"])
        return 0.5 * jnp.mean((pred - y) ** 2)

    def my_backprop(params, x, y):
        pred = jnp.tanh(x @ params["W"] + params["b"])
        d = (pred - y) * (1 - pred ** 2) / y.size
        return {"W": x.T @ d, "b": d.sum(0).at[1].multiply(1.01)}

    params = {"W": jnp.full((3, 2), 0.3), "b": jnp.zeros(2)}
    x, y = jnp.linspace(-1, 1, 12).reshape(4, 3), jnp.ones((4, 2))
    return jaxcheck.check(loss, params, x, y, grad_fn=my_backprop).plot()


def sweep_figure() -> Figure:
    """The textbook example: f(θ) = θ³ at θ = 1, in float32 and float64."""
    fig = Figure(figsize=(7, 4.5))
    jaxcheck.sweep(lambda t: t ** 3, 1.0).plot(ax=fig.add_subplot())
    return fig


def health_figure() -> Figure:
    """Gradient RMS and update/parameter ratio per leaf over 60 steps of gradient descent on
    a small ReLU network, one of whose hidden units never fires (a dead unit)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 4)))
    y = jnp.asarray(np.sin(x[:, :1]))
    params = {"W1": jnp.asarray(rng.normal(size=(4, 8)) / 2),
              "b1": jnp.zeros(8).at[3].set(-20.0),           # unit 3 is dead on this data
              "W2": jnp.asarray(rng.normal(size=(8, 1)) / 3), "b2": jnp.zeros(1)}

    def loss(p):
        h = jax.nn.relu(x @ p["W1"] + p["b1"])
        return jnp.mean((h @ p["W2"] + p["b2"] - y) ** 2)

    grad = jax.jit(jax.grad(loss))
    grads, history, updates = [], [], []
    for _ in range(60):
        g = grad(params)
        step = jax.tree.map(lambda gi: -0.05 * gi, g)
        grads.append(g)
        history.append(params)
        updates.append(step)
        params = jax.tree.map(jnp.add, params, step)
    health = jaxcheck.health(grads, history, updates)

    fig = Figure(figsize=(10, 4))
    rms, ratio = fig.subplots(1, 2)
    for leaf in health.leaves:
        rms.semilogy(leaf.grad_rms, label=leaf.path)
        ratio.semilogy(leaf.update_ratio, label=leaf.path)
    rms.set(title="gradient RMS per leaf", xlabel="step")
    ratio.axhspan(1e-5, 1e-1, color="tab:green", alpha=0.1, label="not flagged (1e-5 … 1e-1)")
    ratio.set(title="‖update‖ / ‖param‖ per leaf", xlabel="step")
    ratio.legend(fontsize="small")
    flags = ", ".join(f"{f.path} {f.kind}" for f in health.flags) or "nothing"
    fig.suptitle(f"jaxcheck.health over {health.steps} steps; flagged: {flags}")
    return fig
