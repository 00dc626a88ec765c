"""warmstart's harness: benchmarks, the test bed, the demo, the example model image and its
server. Not part of what a node or a cluster runs (the ``warmstart`` distribution); it adds
``warmstart bench ...`` and ``warmstart image build-example`` through the CLI's plugin entry
point."""
