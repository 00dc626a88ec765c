"""Where bytes come from: local store, peers, upstream; single-flight across the cluster."""
