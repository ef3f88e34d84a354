"""Stage 4, numerics: from loss values to verdicts.

Steps and stencils (`differences`), the error model and the verdict of one component
(`verdicts`), the one escalation every line through θ goes through (`escalation`), and the
modes built on them: full (`full`, `components`, the methods `one_sided` and `complex_step`
dispatched by `methods`), sample (`sample`) and fast (`fast`: `directional`, `joint`, `taylor`,
`group_testing`), dispatched by `modes`. Results are data (`results.LeafReport`).
"""
