"""Stage 1, inputs: from what the user passed to what the pipeline checks.

Framework adapters (Flax nnx and linen, Equinox, `argnums`, `has_aux`), the pytree split into
checked and carried leaves (`pytree`), validation with errors that name the argument, complex
leaves as real views, options, and precision: the working copies in float64 or native dtypes
(`precision="auto"` chooses per device: `precision.resolve_precision`), and how precise `fn`
and `grad_fn` really are. `prepare.prepared` does it all, for every entry point. Imports
nothing from the later stages.
"""
