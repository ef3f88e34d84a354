"""The loss at a perturbed point from the unperturbed one (`local_changes`).

The interpreted evaluation must give the loss at the perturbed point (to rounding) for every
way a leaf can enter the loss: either operand of a product, transposed or reshaped first, batch
dimensions, broadcasts, sums, elementwise operations, inside a nested jit, alongside other uses
of the leaf, and the layers people use (convolutions, pooling, norms, softmax over rows,
embedding gathers, attention heads); a direction's evaluation must say when it is the loss at
the exact point. Where the structure keeps a change local, following it must cost less than
evaluating the loss (`local_changes.decision`), and where it spreads, the engine evaluates directly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcheck
from jaxcheck.evaluation import engine
from jaxcheck.evaluation import local_changes as lc
from jaxcheck.inputs import pytree
from jaxcheck.inputs.problem import Problem

RNG = np.random.default_rng(0)


def _mlp(p, x):
    h = jnp.tanh(x @ p["w"] + p["b"])
    return jnp.sum(jnp.sin(h @ p["v"]))


def _transposed(p, x):  # torch-style weight (out, in), used through .T
    return jnp.sum(jnp.tanh(x @ p["w"].T) ** 2) + jnp.sum(p["b"])


def _weight_first(p, x):  # the leaf as the left operand
    return jnp.sum(jnp.cos(p["w"].T @ x.T))


def _rows_free(p, x):  # torch-style weight (out, in) contracted on its second axis, no view:
    # its rows an output axis, on either side of the product
    dims = (((1,), (1,)), ((), ()))
    return (jnp.sum(jnp.tanh(jax.lax.dot_general(x, p["w"], dims)) ** 2)
            + jnp.sum(jnp.sin(jax.lax.dot_general(p["w"], x, dims))))


def _attention(p, x):  # batch dimensions in the product
    q = jnp.einsum("bij,bjk->bik", p["q"], x.reshape(2, 3, 4))
    return jnp.sum(jax.nn.softmax(q, axis=-1) * jnp.arange(4.0))


def _regularised(p, x):  # the leaf also used outside a product
    return jnp.sum(jnp.tanh(x @ p["w"])) + 0.3 * jnp.sum(p["w"] ** 2)


@jax.jit
def _inner(w, x):
    return jnp.tanh(x @ w.reshape(4, 3))


def _nested(p, x):  # a view and a product inside a user's jit
    return jnp.sum(_inner(p["w"].reshape(-1), x) ** 3)


def _scaled(p, x):  # a scalar leaf, broadcast
    return jnp.sum(jnp.exp(p["s"] * (x @ p["w"])))


def _selected(p, x):  # select, max, reductions over the changed axis
    y = x @ p["w"]
    return jnp.sum(jnp.where(y > 0, y, 0.1 * y)) + jnp.max(y) + jnp.sum(jnp.mean(y, axis=0) ** 2)


@jax.custom_vjp
def _custom_tanh(x):
    return jnp.tanh(x)


_custom_tanh.defvjp(lambda x: (jnp.tanh(x), x), lambda x, g: (g / jnp.cosh(x) ** 2,))


def _relu_custom(p, x):  # custom_jvp (relu), custom_vjp and checkpoint calls, opened
    h = jax.nn.relu(x @ p["w"])
    return jnp.sum(jax.checkpoint(lambda z: _custom_tanh(z) @ p["v"])(h) ** 2)


def _conv(x, k, spec=("NCHW", "OIHW", "NCHW"), groups=1, padding="SAME"):
    return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=spec,
                                        feature_group_count=groups)


def _pool(x):  # 2x2 max pooling over the last two axes
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def _conv_kernel(p, x):  # a kernel entry changes one output channel
    return jnp.sum(jnp.tanh(_conv(x, p["k"])) ** 2)


def _conv_stack(p, x):  # conv, bias, relu, pool, conv (the first layer's change as its input)
    h = _pool(jax.nn.relu(_conv(x, p["k1"]) + p["b"][None, :, None, None]))
    h = _conv(h, p["k2"], padding="VALID")
    return jnp.sum(jnp.sin(h.reshape(x.shape[0], -1) @ p["w"]))


def _conv_grouped(p, x):  # channels last, two groups
    h = _conv(x, p["k"], ("NHWC", "HWIO", "NHWC"), groups=2)
    return jnp.sum(jnp.cos(h) * jnp.arange(h.shape[-1]))


def _conv_input(p, x):  # a learnt image through a depthwise convolution (x: the kernel)
    h = _conv(p["img"], x, groups=p["img"].shape[1])
    return jnp.sum(jnp.tanh(h) ** 2)


def _conv_input_grouped(p, x):  # two groups of three outputs, channels last
    h = _conv(p["img"], x, ("NHWC", "HWIO", "NHWC"), groups=2)
    return jnp.sum(jnp.tanh(h) ** 2)


def _conv_strided(p, x):  # strides, kernel and input dilation, explicit padding
    h = jax.lax.conv_general_dilated(x, p["k"], (2, 1), ((1, 2), (0, 1)), lhs_dilation=(1, 2),
                                     rhs_dilation=(2, 1))
    return jnp.sum(jnp.sin(h) * jnp.arange(h.shape[-1]))


def _conv_scaled(p, x):  # a kernel scaled per output channel: the change a whole channel
    k = jnp.cos(jnp.arange(4 * 3 * 9.0)).reshape(4, 3, 3, 3) * p["s"][:, None, None, None]
    return jnp.sum(jnp.tanh(_conv(x, k)) ** 2)


def _conv_flat(p, x):  # a channel flattened with its pixels into a dense layer (a block)
    h = jnp.tanh(_conv(x, p["k"]))
    return jnp.sum(jnp.tanh(h.reshape(h.shape[0], -1) @ p["w"]))


def _layer_norm(x, g, b):
    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean((x - m) ** 2, -1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b


def _rms_norm(x, g):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g


def _normed(p, x):  # positions (rows) through layer norm, RMS norm and log-softmax
    h = _layer_norm(x + p["pos"], p["g"], p["b"])
    h = _rms_norm(jnp.tanh(h) @ p["w"], p["r"])
    return jnp.sum(jax.nn.log_softmax(h, axis=-1) * jnp.arange(h.shape[-1]))


def _tokens(x, vocab):  # integer data derived from the float args
    return (jnp.abs(x) * 7).astype(jnp.int32) % vocab


def _embedded(p, x):  # an embedding table through a gather, and a labelled log-softmax
    h = jnp.mean(p["emb"][_tokens(x, p["emb"].shape[0])], axis=1)
    logp = jax.nn.log_softmax(h @ p["w"])
    return -jnp.mean(jnp.take_along_axis(logp, _tokens(x[:, :1], p["w"].shape[1]), axis=1))


def _tied(p, x):  # a tied embedding: gathered, spread over the features, then the output
    h = _layer_norm(jnp.tanh(jnp.mean(p["emb"][_tokens(x, p["emb"].shape[0])], axis=1)), 1.0,
                    0.0)
    return jnp.sum(jax.nn.log_softmax(h @ p["emb"].T, axis=-1) * jnp.arange(6.0))


def _tied_sorted(p, x):  # a tied embedding changed everywhere (sorted: no rule) by the output
    h = jnp.sort(jnp.tanh(jnp.mean(p["emb"][_tokens(x, p["emb"].shape[0])], axis=1)), axis=-1)
    return jnp.sum(jax.nn.log_softmax(h @ p["emb"].T, axis=-1) * jnp.arange(6.0))


def _heads(p, x):  # attention: per-head products, softmax over keys, heads merged back
    (b, t, d), h = x.shape, 2
    q, k, v = ((x @ p[n]).reshape(b, t, h, d // h) for n in ("wq", "wk", "wv"))
    a = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // h), axis=-1)
    o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t, d)
    return jnp.sum(jnp.tanh(o @ p["wo"]))


def _attention_input(p, x):  # a position's features moved: its query, key and value rows,
    # which change every row of its sequence's attention, and no other sequence
    return _heads(p, p["h"] + x)


def _head_scales(p, x):  # a per-head scale on both operands of the scores' product
    s = p["s"][:, None, None]
    q, k = x * s, jnp.cos(x) * s
    return jnp.sum(jax.nn.softmax(jnp.einsum("htd,hsd->hts", q, k), axis=-1) ** 2)


def _windowed(p, x):  # dynamic_slice (its start clamped), scatter-add, cumsum, max over rows
    w = jax.lax.dynamic_slice(p["w"], (jnp.int32(5), jnp.int32(1)), (3, 3))
    w = w.at[jnp.array([0, 2, 0])].add(x[:3, :3])
    y = jnp.cumsum(jnp.tanh(x[:, :3] @ w), axis=0)
    return jnp.sum(jnp.max(y, axis=1) ** 2) + jnp.sum(y ** 2)


def _flax_norm(x, g, b):  # the variance as E[x²] − E[x]², 1/σ times the gain first
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jax.lax.square(x), -1, keepdims=True) - jax.lax.square(mean)
    return (x - mean) * (jax.lax.rsqrt(var + 1e-5) * g) + b


def _var_norm(x, g, b):  # jnp.var, divided by the square root
    return (x - jnp.mean(x, -1, keepdims=True)) / jnp.sqrt(
        jnp.var(x, -1, keepdims=True) + 1e-5) * g + b


NORMS = {"layer": lambda h, p: _layer_norm(h, p["g"], p["b"]),
         "flax": lambda h, p: _flax_norm(h, p["g"], p["b"]),
         "var": lambda h, p: _var_norm(h, p["g"], p["b"]),
         "rms": lambda h, p: _rms_norm(h, p["g"])}


def _pre_norm(norm):
    """A pre-norm residual block: an output projection's entry changes one feature of every
    position (a column of the residual stream), which the norm spreads over every feature of
    every row, in a few directions: then an MLP, a residual, a linear output."""
    def fn(p, x):
        h = x + jnp.tanh(x) @ p["wo"]
        a = NORMS[norm](h, p)
        h = h + jax.nn.gelu(a @ p["w1"] + p["b1"]) @ p["w2"]
        return jnp.sum(jax.nn.log_softmax(h @ p["out"], axis=-1) * jnp.arange(5.0))
    return fn


PRE_NORM = {"wo": (6, 6), "g": (6,), "b": (6,), "w1": (6, 8), "b1": (8,), "w2": (8, 6),
            "out": (6, 5)}

CASES = {
    **{f"pre_norm_{n}": (_pre_norm(n), PRE_NORM, (2, 4, 6), "wo") for n in NORMS},
    "pre_norm_mlp": (_pre_norm("layer"), PRE_NORM, (2, 4, 6), "w1"),
    "mlp": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "w"),
    "mlp_second": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "v"),
    "transposed": (_transposed, {"w": (3, 4), "b": (2,)}, (5, 4), "w"),
    "weight_first": (_weight_first, {"w": (4, 3)}, (5, 4), "w"),
    "rows_free": (_rows_free, {"w": (3, 4)}, (5, 4), "w"),
    "tied": (_tied, {"emb": (6, 3)}, (5, 4), "emb"),
    "tied_sorted": (_tied_sorted, {"emb": (6, 3)}, (5, 4), "emb"),
    "attention": (_attention, {"q": (2, 5, 3)}, (24,), "q"),
    "regularised": (_regularised, {"w": (4, 3)}, (5, 4), "w"),
    "nested": (_nested, {"w": (4, 3)}, (5, 4), "w"),
    "bias": (_mlp, {"w": (4, 3), "b": (3,), "v": (3, 2)}, (5, 4), "b"),
    "scalar": (_scaled, {"s": (), "w": (4, 3)}, (5, 4), "s"),
    "selected": (_selected, {"w": (4, 3)}, (5, 4), "w"),
    "custom": (_relu_custom, {"w": (4, 3), "v": (3, 2)}, (5, 4), "w"),
    "conv_kernel": (_conv_kernel, {"k": (4, 3, 3, 3)}, (2, 3, 6, 6), "k"),
    "conv_stack": (_conv_stack, {"k1": (4, 3, 3, 3), "b": (4,), "k2": (5, 4, 2, 2),
                                 "w": (20, 2)}, (2, 3, 6, 6), "k1"),
    "conv_stack_bias": (_conv_stack, {"k1": (4, 3, 3, 3), "b": (4,), "k2": (5, 4, 2, 2),
                                      "w": (20, 2)}, (2, 3, 6, 6), "b"),
    "conv_grouped": (_conv_grouped, {"k": (3, 3, 2, 6)}, (2, 6, 6, 4), "k"),
    "conv_input": (_conv_input, {"img": (2, 3, 5, 5)}, (3, 1, 3, 3), "img"),
    "conv_input_grouped": (_conv_input_grouped, {"img": (2, 5, 5, 4)}, (3, 3, 2, 6), "img"),
    "conv_strided": (_conv_strided, {"k": (4, 3, 3, 2)}, (2, 3, 7, 6), "k"),
    "conv_scaled": (_conv_scaled, {"s": (4,)}, (2, 3, 6, 6), "s"),
    "conv_flat": (_conv_flat, {"k": (4, 3, 3, 3), "w": (144, 3)}, (2, 3, 6, 6), "k"),
    "layer_norm_rows": (_normed, {"pos": (4, 6), "g": (6,), "b": (6,), "w": (6, 5),
                                  "r": (5,)}, (2, 4, 6), "pos"),
    "layer_norm_gain": (_normed, {"pos": (4, 6), "g": (6,), "b": (6,), "w": (6, 5),
                                  "r": (5,)}, (2, 4, 6), "g"),
    "rms_norm_gain": (_normed, {"pos": (4, 6), "g": (6,), "b": (6,), "w": (6, 5),
                                "r": (5,)}, (2, 4, 6), "r"),
    "embedding": (_embedded, {"emb": (9, 5), "w": (5, 3)}, (4, 6), "emb"),
    "attention_query": (_heads, {"wq": (6, 6), "wk": (6, 6), "wv": (6, 6), "wo": (6, 6)},
                        (2, 4, 6), "wq"),
    "attention_value": (_heads, {"wq": (6, 6), "wk": (6, 6), "wv": (6, 6), "wo": (6, 6)},
                        (2, 4, 6), "wv"),
    "attention_key": (_heads, {"wq": (6, 6), "wk": (6, 6), "wv": (6, 6), "wo": (6, 6)},
                      (2, 4, 6), "wk"),
    "attention_input": (_attention_input, {"h": (2, 4, 6), "wq": (6, 6), "wk": (6, 6),
                                           "wv": (6, 6), "wo": (6, 6)}, (2, 4, 6), "h"),
    "head_scales": (_head_scales, {"s": (2,)}, (2, 4, 3), "s"),
    "windowed": (_windowed, {"w": (8, 4)}, (6, 5), "w"),
}
# Variants of a rule already covered (layouts, groups, strides, other leaves of a model):
# in the slow run only.
VARIANTS = {"conv_grouped", "conv_input_grouped", "conv_strided", "conv_scaled",
            "conv_stack_bias", "layer_norm_gain", "rms_norm_gain", "attention_value",
            "attention_key", "pre_norm_flax", "pre_norm_var"}
CASE_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in VARIANTS else n
               for n in sorted(CASES)]
# Cases where every use of the leaf is a product, so that a direction's point is exact.
EXACT = {"mlp", "mlp_second", "transposed", "weight_first", "rows_free", "attention", "nested",
         "selected", "custom", "attention_query", "attention_value", "attention_key",
         *(name for name in CASES if name.startswith("pre_norm"))}


def _setup(name, shapes=None, x_shape=None):
    fn, case_shapes, case_x_shape, key = CASES[name]
    shapes, x_shape = shapes or case_shapes, x_shape or case_x_shape
    params = {k: jnp.asarray(RNG.normal(size=s)) for k, s in shapes.items()}
    x = jnp.asarray(RNG.normal(size=x_shape))
    keys = sorted(params)
    position = keys.index(key)
    dynamic = tuple(params[k] for k in keys)

    def loss(param_dynamic, arg_dynamic):
        return fn(dict(zip(keys, param_dynamic)), *arg_dynamic)

    return loss, position, dynamic, (x,)


def _traced(name):
    """The case's loss, the leaf's position, the dynamic leaves, args and the traced loss."""
    loss, position, dynamic, args = _setup(name)
    return loss, position, dynamic, args, lc.trace(loss, position, dynamic, args)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_one_hot_update_gives_the_loss_at_the_perturbed_point(name):
    with jax.enable_x64(True):
        loss, position, dynamic, args, traced = _traced(name)
        leaf = dynamic[position]
        at = jax.jit(jax.vmap(traced.at_entry, in_axes=(None, None, 0, 0)))
        values = leaf.reshape(-1) + 0.37
        got = at(dynamic, args, jnp.arange(leaf.size), values)

        def moved(i):  # the loss evaluated as written, at the leaf with entry i moved
            perturbed = list(dynamic)
            perturbed[position] = leaf.reshape(-1).at[i].set(values[i]).reshape(leaf.shape)
            return loss(tuple(perturbed), args)

        want = jax.jit(jax.vmap(moved))(jnp.arange(leaf.size))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _direct(loss, position):
    """The loss with entry i of the leaf set to v, evaluated as written (the engine's way)."""
    def direct(shared, i, v):
        leaf = shared[0][position]
        dynamic = list(shared[0])
        dynamic[position] = jnp.where(engine.flat_index(leaf.shape) == i, v, leaf)
        return loss(dynamic, shared[1])
    return direct


# Cases where a one-entry change stays in a small part of what follows (a channel, a row,
# a head, a feature of the tokens that use a row), at sizes where following it must cost
# less per point than evaluating the loss.
LOCAL = {
    "conv_kernel": ({"k": (8, 4, 3, 3)}, (4, 4, 12, 12)),
    "conv_stack": ({"k1": (8, 3, 3, 3), "b": (8,), "k2": (8, 8, 3, 3), "w": (128, 4)},
                   (4, 3, 12, 12)),
    "conv_grouped": ({"k": (3, 3, 4, 8)}, (4, 12, 12, 8)),
    "conv_input": ({"img": (4, 8, 12, 12)}, (8, 1, 3, 3)),
    "conv_flat": ({"k": (16, 4, 3, 3), "w": (16 * 144, 10)}, (4, 4, 12, 12)),
    "layer_norm_rows": ({"pos": (16, 32), "g": (32,), "b": (32,), "w": (32, 32), "r": (32,)},
                        (4, 16, 32)),
    "embedding": ({"emb": (200, 32), "w": (32, 8)}, (16, 12)),
    "attention_query": (dict.fromkeys(("wq", "wk", "wv", "wo"), (16, 16)), (2, 64, 16)),
    "attention_value": (dict.fromkeys(("wq", "wk", "wv", "wo"), (16, 16)), (2, 64, 16)),
    "attention_input": ({"h": (8, 16, 16), **dict.fromkeys(("wq", "wk", "wv", "wo"), (16, 16))},
                        (8, 16, 16)),
    "head_scales": ({"s": (8,)}, (8, 16, 16)),
    "mlp": ({"w": (48, 48), "b": (48,), "v": (48, 8)}, (64, 48)),
}


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_a_change_that_stays_local_costs_less_per_point(name):
    with jax.enable_x64(True):
        shapes, x_shape = LOCAL[name]
        loss, position, dynamic, args = _setup(name, shapes, x_shape)
        traced = lc.trace(loss, position, dynamic, args)
        local, direct = lc.costs(traced, dynamic, args)
    assert local.per_point < 0.5 * direct.per_point


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_the_direct_cost_read_from_the_loss_is_the_direct_kernels(name):
    with jax.enable_x64(True):
        shapes, x_shape = LOCAL[name]
        loss, position, dynamic, args = _setup(name, shapes, x_shape)
        closed = lc.loss_jaxpr(loss, dynamic, args)
        leaf = dynamic[position]
        kernel = lc.cost(_direct(loss, position), (tuple(dynamic), tuple(args)),
                         jax.ShapeDtypeStruct((), np.int32),
                         jax.ShapeDtypeStruct((), leaf.dtype))
        read = lc.direct_cost(closed, [position], dynamic)
    assert read.per_point == pytest.approx(kernel.per_point, rel=0.05)
    assert read.equations == pytest.approx(kernel.equations, rel=0.1)


def test_a_norm_after_a_changed_column_keeps_the_next_product_in_a_few_directions():
    # An output projection's entry changes a column of the residual stream; the layer norm
    # spreads it over every row, but as the rows rescaled plus a few vectors, so the MLP's
    # first product costs a few columns a point. Its second product, after the GELU, is
    # dense: ~0.6 of the direct cost (~0.83 with everything after the norm dense).
    with jax.enable_x64(True):
        shapes = {**PRE_NORM, "wo": (32, 32), "g": (32,), "b": (32,), "w1": (32, 64),
                  "b1": (64,), "w2": (64, 32), "out": (32, 5)}
        loss, position, dynamic, args = _setup("pre_norm_layer", shapes, (4, 16, 32))
        local, direct = lc.costs(lc.trace(loss, position, dynamic, args), dynamic, args)
    assert local.per_point < 0.7 * direct.per_point


def test_a_channel_flattened_into_a_dense_layer_stays_a_block():
    # conv, tanh, then (batch, channels·pixels) @ w: a kernel entry changes one channel, a
    # range of the flattened axis, so the dense layer reads that range of w's rows only (a
    # fourth of the direct cost when the range was taken dense: every row)
    with jax.enable_x64(True):
        shapes, x_shape = LOCAL["conv_flat"]
        loss, position, dynamic, args = _setup("conv_flat", shapes, x_shape)
        local, direct = lc.costs(lc.trace(loss, position, dynamic, args), dynamic, args)
    assert local.per_point < 0.1 * direct.per_point


def _spread(p, x):  # the leaf normalised as a whole first: every entry changes everything
    w = p["w"] / jnp.sqrt(jnp.sum(p["w"] ** 2))
    return jnp.sum(jnp.tanh(x @ w) ** 2)


def test_following_a_change_that_spreads_costs_no_less_per_point():
    with jax.enable_x64(True):
        w, x = jnp.asarray(RNG.normal(size=(4, 3))), jnp.asarray(RNG.normal(size=(5, 4)))
        loss = lambda pd, ad: _spread({"w": pd[0]}, *ad)
        traced = lc.trace(loss, 0, (w,), (x,))
        local, direct = lc.costs(traced, (w,), (x,))
    assert local.per_point >= direct.per_point


@pytest.mark.parametrize("fn, leaf, expected", [
    (_mlp, "w", True),      # a wide product: following changes repays its larger program
    (_spread, "w", False),  # the change spreads: nothing to gain
    (_mlp, "b", False),     # too few entries to repay compiling a larger program
])
def test_the_engine_follows_changes_only_where_it_pays(fn, leaf, expected):
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(RNG.normal(size=(128, 128))), "b": jnp.zeros(128),
                  "v": jnp.asarray(RNG.normal(size=(128, 2)))}
        p = pytree.split(params)
        a = pytree.split((jnp.asarray(RNG.normal(size=(64, 128))),), check_floats=False)
        problem = Problem(fn, p.structure, a.structure)
        position = sorted(params).index(leaf)
        assert engine.follows_local_changes(problem, position, p.dynamic, a.dynamic) \
            == expected


def test_a_cheap_followed_change_takes_large_batches_and_a_dear_one_ordinary_ones(
        monkeypatch):
    # Large batches amortise a cheap point's calls, but a dear point's batch leaves the caches
    engine.clear_cache()
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(RNG.normal(size=(128, 128))), "b": jnp.zeros(128),
                  "v": jnp.asarray(RNG.normal(size=(128, 2)))}
        p = pytree.split(params)
        a = pytree.split((jnp.asarray(RNG.normal(size=(64, 128))),), check_floats=False)
        kernel = engine.EntryLoss(Problem(_mlp, p.structure, a.structure),
                                  sorted(params).index("w"))
        shared = (p.dynamic, a.dynamic)
        assert engine.batch_size(kernel, shared, 10**5) == engine.MAX_BATCH_CPU_LOCAL
        monkeypatch.setattr(engine, "LOCAL_LARGE_BATCH_MAX_COST", 0.0)
        assert engine.batch_size(kernel, shared, 10**5) == engine.MAX_BATCH_CPU
    engine.clear_cache()


def _classifier(p, x, labels):
    h = jnp.tanh(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])
    logp = jax.nn.log_softmax(h @ p["w3"] + p["b3"])
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _classifier_problem(hidden):
    """A 32-hidden-hidden-10 `_classifier` on a batch of 64: params, their split, the
    args' split and the problem."""
    sizes = {"w1": (32, hidden), "b1": (hidden,), "w2": (hidden, hidden), "b2": (hidden,),
             "w3": (hidden, 10), "b3": (10,)}
    params = {k: jnp.asarray(RNG.normal(size=s) / 8) for k, s in sizes.items()}
    p = pytree.split(params)
    a = pytree.split((jnp.asarray(RNG.normal(size=(64, 32))),
                      jnp.asarray(RNG.integers(0, 10, 64))), check_floats=False)
    return params, p, a, Problem(_classifier, p.structure, a.structure)


@pytest.mark.parametrize("calls, expected", [(1, False), (lc.CALLS, True)])
def test_a_leaf_follows_its_changes_where_repeated_calls_repay_its_program(monkeypatch, calls,
                                                                         expected):
    # The first layer of a small classifier (32-40-40-10, n = 3,370): following its changes
    # is cheaper a point, which one call does not repay for a program of its own, but the
    # calls that follow (a check every N steps, a test suite) do, and they compile nothing.
    monkeypatch.setattr(lc, "CALLS", calls)
    engine.clear_cache()
    with jax.enable_x64(True):
        params, p, a, problem = _classifier_problem(40)
        position = sorted(params).index("w1")
        assert engine.follows_local_changes(problem, position, p.dynamic, a.dynamic) \
            == expected
    engine.clear_cache()


def test_a_leaf_cheaper_to_evaluate_than_any_program_is_not_traced(monkeypatch):
    # The classifier's output bias (10 entries): its direct evaluation costs less than
    # compiling the loss's equations, which a followed path's program holds too, so the path
    # is not traced to cost it; the first layer's is.
    traced = []
    costs = lc.costs

    def recording(t, *args):
        traced.append(t.position)
        return costs(t, *args)

    monkeypatch.setattr(lc, "costs", recording)
    with jax.enable_x64(True):
        params, p, a, problem = _classifier_problem(52)
        for name in ("b3", "w1"):
            t = lc.trace(problem.loss, sorted(params).index(name), p.dynamic, a.dynamic)
            decided = lc.decision(t, p.dynamic, a.dynamic)
            assert (decided is not None) == (name == "w1")
        assert traced == [sorted(params).index("w1")]


def _along_a_direction(name):
    """`_traced(name)` and a random direction u of its leaf (flat)."""
    loss, position, dynamic, args, traced = _traced(name)
    return loss, position, dynamic, args, traced, jnp.asarray(
        RNG.normal(size=dynamic[position].size))


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_loss_along_a_direction_and_whether_it_is_exact(name):
    with jax.enable_x64(True):
        loss, position, dynamic, args, traced, u = _along_a_direction(name)
        leaf = dynamic[position]
        ts = jnp.asarray([0.0, 1e-3, -0.5])
        exact = []

        def along(t):
            f, is_exact = traced.along(dynamic, args, u, t)
            exact.append(is_exact)
            return f

        def moved(t):
            perturbed = list(dynamic)
            perturbed[position] = (leaf.reshape(-1) + t * u).reshape(leaf.shape)
            return loss(tuple(perturbed), args)

        got = jax.jit(jax.vmap(along))(ts)
        np.testing.assert_allclose(got, jax.jit(jax.vmap(moved))(ts), rtol=1e-12)
        # exact only when every use of the leaf is a product
        assert exact == [name in EXACT]


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_a_leafs_products_formed_once_give_the_same_losses_without_forming_them_again(name):
    # fast mode's search forms the leaf's products at θ once and hands them to each call
    with jax.enable_x64(True):
        _, _, dynamic, args, traced, u = _along_a_direction(name)
        ts = jnp.asarray([1e-3, -0.5])
        products = jax.jit(traced.products_at_theta)(dynamic, args)

        def along(t, given=None):
            return traced.along(dynamic, args, u, t, given)[0]

        again = jax.jit(jax.vmap(along))(ts)
        given = jax.jit(lambda p: jax.vmap(lambda t: along(t, p))(ts))
        np.testing.assert_allclose(given(products), again, rtol=1e-13, atol=1e-300)
        if name in EXACT:   # every use of the leaf a product: each is formed once, not per call
            assert len(products) >= 1
            dots = lambda f, *a: str(jax.make_jaxpr(f)(*a)).count("dot_general")
            assert dots(given, products) < dots(jax.vmap(along), ts)


def _leaf_rows(param) -> int:
    name = param.values[0] if hasattr(param, "values") else param
    _, shapes, _, key = CASES[name]
    return shapes[key][0] if shapes[key] else 0


@pytest.mark.parametrize("name", [p for p in CASE_PARAMS if _leaf_rows(p) >= 2])
def test_a_direction_on_a_window_of_rows_gives_the_losses_of_the_whole_direction(name):
    # fast mode's search builds a direction on a few rows of a large leaf on those rows alone;
    # the leaf's leading axis is contracted, a batch axis or free, or seen through a view
    with jax.enable_x64(True):
        _, position, dynamic, args, traced, u = _along_a_direction(name)
        shape = dynamic[position].shape
        rows = shape[0] // 2
        ts = jnp.asarray([1e-3, -0.5])
        for row in (0, shape[0] - rows):
            u_rows = u.reshape(shape)[row:row + rows]
            whole = jnp.zeros(shape).at[row:row + rows].set(u_rows).reshape(-1)
            exact = []

            def windowed(t, u_rows=u_rows, row=row, exact=exact):
                f, is_exact = traced.along_window(dynamic, args, u_rows, jnp.int32(row), t)
                exact.append(is_exact)
                return f

            got = jax.jit(jax.vmap(windowed))(ts)
            want = jax.jit(jax.vmap(lambda t, whole=whole: traced.along(dynamic, args, whole,
                                                                         t)[0]))(ts)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
            assert exact == [name in EXACT]


def test_a_product_of_the_leaf_with_itself_is_evaluated_as_written():
    with jax.enable_x64(True):
        w = jnp.asarray(RNG.normal(size=(3, 3)))
        loss = lambda pd, ad: jnp.sum(jnp.sin(pd[0] @ pd[0].T))
        traced = lc.trace(loss, 0, (w,), ())
        got = traced.at_entry((w,), (), 4, 2.0)
        np.testing.assert_allclose(got, loss((w.at[1, 1].set(2.0),), ()), rtol=1e-13)


@pytest.fixture
def local_changes_everywhere(monkeypatch):
    """Follow changes through the loss for leaves of any size (the engine skips small ones)."""
    monkeypatch.setattr(engine, "LOCAL_CHANGES_MIN_SIZE", 1)
    monkeypatch.setattr(lc, "decision", lambda *args: lc.Cost(0.0, 0))
    engine.clear_cache()
    yield
    engine.clear_cache()


def test_engine_values_match_the_direct_evaluation(local_changes_everywhere, monkeypatch):
    with jax.enable_x64(True):
        _, position, dynamic, args = _setup("mlp")
        leaf = dynamic[position]
        p = pytree.split(dict(zip(["b", "v", "w"], dynamic)))
        a = pytree.split(args, check_floats=False)
        problem = Problem(_mlp, p.structure, a.structure)
        idx = np.tile(np.arange(leaf.size), 2)
        values = np.concatenate([np.asarray(leaf).reshape(-1) + 1e-5,
                                 np.asarray(leaf).reshape(-1) - 1e-5])
        local = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 8)
        monkeypatch.setattr(engine, "LOCAL_CHANGES_MIN_SIZE", 10**9)
        engine.clear_cache()
        direct = engine.evaluate(problem, position, p.dynamic, a.dynamic, idx, values, 8)
    # the loss is a sum of terms of size ~1 that cancel to ~1e-2: rounding of ~1e-16 each
    np.testing.assert_allclose(local, direct, rtol=1e-12)


def test_full_check_finds_a_wrong_entry_exactly_with_local_changes(local_changes_everywhere):
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(RNG.normal(size=(6, 5))), "b": jnp.zeros(5),
                  "v": jnp.asarray(RNG.normal(size=(5, 3)))}
        x = jnp.asarray(RNG.normal(size=(7, 6)))

        def wrong(p, x):
            g = jax.grad(_mlp)(p, x)
            return {**g, "w": g["w"].at[2, 1].multiply(1.001)}

        assert jaxcheck.check(_mlp, params, x).ok
        report = jaxcheck.check(_mlp, params, x, grad_fn=wrong)
    assert [f.location for f in report.failures] == ["['w'][2, 1]"]
