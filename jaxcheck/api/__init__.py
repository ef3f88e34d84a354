"""The entry points that run the pipeline: inputs → plan → evaluation → numerics → report.

`check` and `assert_gradients` (`check`), `check_jacobian` (`jacobian`), `check_hessian`
(`hessian`) and loss terms checked one by one (`loss_terms`).
"""
