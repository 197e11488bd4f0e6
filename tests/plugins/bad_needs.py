"""A plugin asking for an input that does not exist: registration fails in one line."""

from harness import plugins

plugins.register_score("psychic", lambda w: w, needs={"weights", "future_gradients"})
