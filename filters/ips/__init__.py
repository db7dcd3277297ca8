"""IPS: Suricata-compatible rule language (parsing, matching) and the detection engine.

* ``rule``            the rule model (frozen dataclasses) the parser builds and the matchers read;
* ``rule_lexer``      rule text into header and ``key:value;`` options, value decoding;
* ``rule_parser``     rules and rule files into ``Rule``s (skip-and-count of unsupported ones);
* ``payload_parser``  payload keywords (content, pcre, byte_*...) into buffer sections, fast pattern;
* ``pcre``            PCRE values compiled by PCRE2 under match limits;
* ``netspec``         address and port specs, rule variables;
* ``rule_groups``     the compiled rule set: inspection groups and their hyperscan prefilters;
* ``addrindex``       address index over rule headers;
* ``packet_match``    rule headers and per-packet keyword checks against a packet;
* ``buffer_match``    a buffer section (content, pcre, byte_*, transforms) against a buffer;
* ``app_buffers``     sticky buffers (http.*, file.data, tls.*, dns.query) from app-layer events;
* ``engine``          the ``Ips`` engine that runs it all inline.
"""
