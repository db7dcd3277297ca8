"""The benchmarks (``python -m lab bench``, ``python -m lab bench --suite filter``, ``python -m lab center-bench``).

Each suite writes its own section of docs/benchmarks.md (``doc``):

* ``dataplane``: the data path through the agent against the bare bridge, in the lab; its report is
  ``dataplane_report``, the offline IPS throughput it includes is ``offline`` over the synthetic
  capture of ``capture``.
* ``filter``: the web filter and threat protection (look-up rates, memory, and DNS and HTTPS in the lab).
* ``center``: the operations center with thousands of simulated boxes.

Shared by them: ``report`` (statistics, metrics and goals, rows, Markdown and terminal tables),
``host`` (the machine, its processes and the bench's helper processes), ``blocks`` (one block of
measurements in the lab: bare bridge or agent, the noise of other processes) and ``load`` (the
load generators, clients and servers run inside the lab namespaces: ``python -m lab.bench.load ROLE``).
"""
