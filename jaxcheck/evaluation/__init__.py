"""Stage 3, evaluation: the one engine that evaluates fn at perturbed points.

`engine` compiles and runs every batched evaluation: a mode, method or Jacobian hands it a
per-entry `engine.Kernel` (the loss with one entry moved, the output vector, the complex step,
a Jacobian row) and gets stacked results back; it owns the batch size, the memory budget, the
compile cache, the devices (`devices`) and the progress bar (`progress`). `local_changes`
follows a one-entry change through the loss's jaxpr; `directions` builds random directions
inside the compiled program; `points` is the checked path from a task to the engine.
"""
