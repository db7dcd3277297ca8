"""Tests for filters.ips."""
