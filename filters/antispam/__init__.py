"""Anti-spam (rspamd through its HTTP protocol): see engine.py."""
