"""A plugin taking a built-in name."""

from harness import plugins

plugins.register_score("lamp", lambda w: w, needs={"weights"})
