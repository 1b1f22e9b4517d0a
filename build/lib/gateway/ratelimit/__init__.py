"""Rate limiting: windows, the sliding-window limiter and its response headers."""
