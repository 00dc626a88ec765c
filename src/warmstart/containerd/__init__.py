"""Everything about containerd: running ``ctr``, its images and their tiers, ``hosts.toml``,
its content store and placing blobs in it. Imports no ``agent``, ``runtime`` or ``serving``."""
