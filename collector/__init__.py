"""mailpulse collector."""
