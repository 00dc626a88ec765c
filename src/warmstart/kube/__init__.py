"""Kubernetes: the one API client (``client``), where it connects (``config``), label selectors
(``selectors``, pure) and a list-then-watch cache of one resource (``informer``).

Used by the agent (``--peers-from-kubernetes``: the peer set from the agents' EndpointSlices) and
by the operator (``warmstart operator``: nodes, workloads, labels). Nothing here imports the
agent, the fetcher or the operator.
"""
