"""The node agent: a pull-through OCI mirror for containerd, peers, pre-warm."""
