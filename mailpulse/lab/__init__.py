"""Helpers for tests and the demo: real servers (Mosquitto, Postfix, Dovecot) on loopback."""
