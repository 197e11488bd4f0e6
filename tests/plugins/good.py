"""A small plugin for the tests: a weight-only score, an allocation, a schedule and a method."""

from harness import plugins
from harness.pruning.allocation import uniform
from harness.pruning.schedules import Cubic

plugins.require(1)

plugins.register_score("square", lambda w: w * w, needs={"weights"}, description="w^2 (magnitude's ranking)")
plugins.register_allocation("uniform_copy", uniform, description="uniform, registered from outside")


def linear(final_sparsity, start, end, every, initial_sparsity, freeze_after_end):
    """A linear ramp to the target, updated on the cubic schedule's steps."""
    cubic = Cubic(final_sparsity, start, end, every, initial_sparsity, freeze_after_end)

    class Linear:
        def density(self, t):
            if t >= end:
                return 1.0 - final_sparsity
            return 1.0 - (initial_sparsity + (final_sparsity - initial_sparsity) * max(0, t - start) / (end - start))

        def is_update(self, t):
            return cubic.is_update(t)

    return Linear()


plugins.register_schedule("linear", linear, description="linear ramp")
plugins.register_method("square_global", procedure="iterative", score="square", allocation="global",
                        description="global threshold over w^2")
