"""The streaming reverse proxy: upstream pools, header hygiene, HTTP and WebSocket forwarding."""
