"""The cloud tier: a large teacher model that streams the first K tokens of each answer over gRPC."""
