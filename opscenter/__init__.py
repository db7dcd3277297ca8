"""Reference operations center for vcr-agent boxes."""
