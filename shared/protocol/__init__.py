"""The wire protocol: generated gRPC stubs, the domain types they convert to, and request validation."""
