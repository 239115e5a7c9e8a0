"""mailpulse pynq_overlays."""
