"""Pallas kernels with hand-written backward passes (`tests/pallas_kernels.py`, run with
`interpret=True`), checked in native float32: against their own finite differences and against
a float64 reference implementation. The correct kernels pass; each planted backward bug FAILs
in both comparisons, localised to the leaf (and entries) it hits."""
import functools

import jax
import pallas_kernels as pk
import pytest

import jaxcheck

BLOCK_OFF_DIAGONAL = {(i, j) for i in range(pk.BLOCK) for j in range(pk.BLOCK) if i != j}
# The bugs are in backward kernels only, so every variant has this forward: checking it with
# the variant's gradient as grad_fn compiles the forward's programs once for all of them.
LOSS = pk.model_loss()


@functools.cache
def _report(bug, reference=True):
    params, x, labels = pk.example()
    grad_fn = jax.grad(pk.model_loss(bug))
    if reference:
        return jaxcheck.check(LOSS, params, x, labels, grad_fn=grad_fn,
                              reference=pk.reference_loss)
    return jaxcheck.check(LOSS, params, x, labels, grad_fn=grad_fn, precision="native")


def test_the_correct_kernels_pass_against_the_reference_and_their_own_differences():
    report = _report(None)
    assert report.ok and report.disagreement == "none"
    assert report.native.ok and report.native.info["precision"] == "native"
    assert report.forward.ok
    # float32 kernels against float64: agreement at float32's rounding, not at ~1e-5
    assert report.relative_difference < 1e-6


@pytest.mark.parametrize(("bug", "leaf"), [("dropped_term", "['W_in']"),
                                           ("wrong_scale", "['gamma']"),
                                           ("transposed_block", "['W']")])
def test_a_planted_backward_bug_fails_at_the_leaf_it_hits(bug, leaf):
    report, native = _report(bug), _report(bug, reference=False)
    assert report.disagreement == "backward" and report.forward.ok
    # the native check alone finds what the reference check's own native part finds
    assert [f.location for f in native.failures] == [f.location for f in report.native.failures]
    for found in (report, native):              # against the reference, in native float32
        assert not found.ok
        assert {f.path for f in found.failures} == {leaf}
    if bug == "transposed_block":   # the entries the transposed block moved, and only those
        for found in (report, native):
            indices = {f.index for f in found.failures}
            assert indices <= BLOCK_OFF_DIAGONAL
            assert {(j, i) for i, j in indices} == indices
        assert len(report.failures) >= 10   # the reference sees (nearly) every moved entry
    else:                           # every entry of the leaf is off
        size = report.leaf(leaf).size
        assert report.leaf(leaf).n_fail == size == native.leaf(leaf).n_fail
