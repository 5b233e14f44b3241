"""The edge's OpenAI-compatible HTTP door: routes, one serving class per endpoint, errors in OpenAI's shape."""
