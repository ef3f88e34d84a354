"""Stage 2, plan: what is checked and against what, before anything is evaluated.

One `tasks.LeafTask` per checked leaf; the gradient under test (`gradients.AnalyticGradient`:
`jax.grad(fn)` or the user's `grad_fn`); the setup every mode shares (`setup.shared_setup`:
the gradient's rounding split from its final cast, and the determinism check). Imports only
`inputs`.
"""
