"""The doctests of the compiled modules (fivenines.accel) run from their sources: a compiled module
is not a file pytest can collect. ``make test`` runs the suite once more with FIVENINES_PURE=1,
which collects them."""

from fivenines import accel

collect_ignore = [] if accel.WHY_PURE else [str(accel.source_path(m)) for m in accel.MODULES]
