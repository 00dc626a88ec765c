"""Kubernetes: the one API client (``client``), where it connects (``config``), label selectors
(``selectors``, pure) and a list-then-watch cache of one resource (``informer``).

Used by the agent (``--peers-from-kubernetes``: the peer set from the agents' EndpointSlices) and
by the operator (``warmstart operator``: its writes, and matching what kopf caches). Label
selectors sent with a list or watch are the API server's to apply. Nothing here imports the
agent, the fetcher or the operator.
"""
