"""Models as OCI artifacts, on a node: extracting their layers safely and materialising them
once into the store's read-only model directories (``warmstart.oci.model`` says what goes where;
this package does the I/O)."""
