"""Web antivirus (ClamAV through the box's clamd): see engine.py."""
