"""What both tiers' gRPC servers share: the server builder, security, interceptors, errors, logging, settings."""
