"""IPS: Suricata-compatible rule language (parsing, matching) and the detection engine."""
