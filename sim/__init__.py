"""mailpulse sim."""
