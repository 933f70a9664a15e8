"""Policies, the shared scheduler, and the request model (no torch, no clock)."""
