"""Real parts for tests and benchmarks: upstream registries, containerd instances, images."""
