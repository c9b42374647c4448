"""fivenines: a high-availability system in one Python package."""

from fivenines import accel as accel  # first: decides whether the compiled data plane is loaded

__version__ = "0.1.0"
