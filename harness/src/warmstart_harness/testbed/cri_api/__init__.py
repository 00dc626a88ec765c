"""Generated gRPC stubs of the CRI subset in api.proto (see scripts/gen-cri-stubs.sh)."""
