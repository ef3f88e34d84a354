"""Stage 4, numerics: from loss values to verdicts.

Steps and stencils (`differences`), the error model and the verdict of one component
(`verdicts`), the one escalation every line through θ goes through (`escalation`), and the
modes built on them: full (`full`, `components`, with the methods `one_sided` and
`complex_step`), sample (`sample`) and fast (`fast`: `direction_checks`, `joint`, `taylor`,
`group_testing`), all dispatched by `dispatch.run_mode`. Results are data
(`results.LeafReport`).
"""
