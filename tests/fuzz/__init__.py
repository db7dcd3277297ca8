"""Coverage-guided fuzzing of every parser that takes bytes from the wire or a file, and of the center's API.

* ``harness.py``       the target registry, input shapes (two streams, random segmentation), the error watch;
* ``targets_wire.py``  packet, DNS, TLS, HTTP, SMTP and the whole pipeline;
* ``targets_files.py`` pcap/pcapng, IPS rules, threat-intel feeds, web filter lists, bundle manifests;
* ``api.py``           the center's OpenAPI schema through schemathesis;
* ``seeds.py``         builds the seed corpus (``corpus/<target>/``, committed);
* ``__main__.py``      ``python -m tests.fuzz TARGET --seconds N``: atheris (libFuzzer) on a target.

``make test`` runs ``test_fuzz.py`` (every corpus file replayed, then a short atheris run per target
and a short schemathesis run); ``make fuzz`` the long runs. See docs/fuzzing.md.

Nothing here may import ``filters``/``agent``/``opscenter`` at package import: the runner imports
the targets inside atheris' instrumentation so that coverage guides it.
"""
