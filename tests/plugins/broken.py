"""A plugin whose score and allocation break their contracts at run time (the tests' planted mistakes)."""


from harness import plugins


def wrong_shape(w):
    return w.reshape(-1)[:3]  # not the layer's shape


def raises(inputs):
    raise ValueError("no batches for me\nsecond line")


def too_many(layers, scores, rate):
    return [int(l.mask.sum()) + 1 for l in layers]  # more survivors than eligible entries


plugins.register_score("wrong_shape", wrong_shape, needs={"weights"})
plugins.register_score("raises", raises, needs={"model", "batches"})
plugins.register_allocation("too_many", too_many)
