"""Stage 4 (beside `numerics`): exact consistency checks of differentiation rules.

Where `numerics` compares a derivative with finite differences, the modules here compare JAX
transformations of the same function with each other (the JVP with the VJP, `vmap` with a
loop, `jit` with eager evaluation, `linearize` with `jvp`) and the contracts a VJP must keep
(dtypes, shapes, linearity, integer and symbolic-zero cotangents). Each of `transpose`,
`batching`, `compilation`, `contracts` and `linearize` is one check; `subject` is the function
under test as they all see it, `rounding` the tolerances (from `magnitudes`, the terms a
derivative sums), `agreement` the comparison of two computations, `results` what they hand to
the report (`report/rules.py`). The entry point is `api/rules.py`; the third-order check,
which needs the finite differences of `check_jacobian`, is `api/third_order.py`.
"""
