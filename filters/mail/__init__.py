"""Mail security: MIME parsing of whole messages, attachment extraction, rewriting (infected parts
replaced by a notice, spam tagged) and the mail engine's configuration and alarms. Sans-IO: the
transparent proxy (agent/dataplane/mailproxy.py) does the sockets and the scanner calls."""
