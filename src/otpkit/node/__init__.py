"""The node: one per OS process tree. ``Node`` starts the local actor system, its kernel
supervisor and the system services (dist, the global registry, the quorum, the admin
service, the discovery poller); ``ProbeServer`` answers Kubernetes' probes for
``otpkit run``."""

from otpkit.node._node import SYSTEM_CHILDREN, Kernel, Node
from otpkit.node._probes import ProbeServer, bind_host, probe_hosts

__all__ = ["SYSTEM_CHILDREN", "Kernel", "Node", "ProbeServer", "bind_host", "probe_hosts"]
