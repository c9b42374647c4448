"""The namespace rig: hosts as network namespaces on one machine, real faults, guaranteed cleanup.

Shared by the cluster tests, the benches and ``make cluster-demo``; see :mod:`fivenines.rig.netns`.
"""

from fivenines.rig.arp import ArpProbe
from fivenines.rig.netns import Host, Rig, RigError, leftovers, sweep, unavailable
from fivenines.rig.watch import AddressWatch

__all__ = ["AddressWatch", "ArpProbe", "Host", "Rig", "RigError", "leftovers", "sweep", "unavailable"]
