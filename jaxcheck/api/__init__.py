"""The entry points that run the pipeline: inputs → plan → evaluation → numerics → report.

`check` and `assert_gradients` (`check`), `check_jacobian` (`jacobian`), `check_hessian`
(`hessian`), `check_third_order` (`third_order`), `check_rules` (`rules`: the consistency
checks of `jaxcheck.rules` and the third-order one) and loss terms checked one by one
(`loss_terms`).
"""
