"""containerd, from the agent's side: what its content store is, and placing blobs in it."""
