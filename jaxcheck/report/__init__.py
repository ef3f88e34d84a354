"""Stage 5, report: the results as data, and their renderers.

`report.Report` gathers the per-leaf results of the numerics (`jacobian.JacobianReport` the
blocks of a Jacobian check, `terms.TermsReport` a loss checked term by term,
`rules.RulesReport` the rule checks of `check_rules`); `text`, `rules.render_rules`,
`formats` (JSON, HTML, plots) and `bands` (the classic table) render that data and never
compute a verdict.
"""
