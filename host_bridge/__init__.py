"""mailpulse host_bridge."""
