"""Pruning: the toolkit (masks, scores, allocations, schedules, mask updates and decisions, graph metrics) and the
procedures (:mod:`harness.pruning.methods`). Torch-free to import: :mod:`.catalog`, :mod:`.schedules`, :mod:`.steps`
and the procedures; the rest is the torch toolkit."""
