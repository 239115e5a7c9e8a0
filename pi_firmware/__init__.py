"""mailpulse pi_firmware."""
