"""The file engines' depth from the configuration: with the antivirus on, the worker's app layer
follows downloads to ``engines.av.max_size`` and the kernel's connbytes cap lets them through to
user space that far; with it off, nothing changes."""
from __future__ import annotations

from agent.config import parse_config
from agent.dataplane.bridge import spec_from_config
from agent.dataplane.worker import pipeline_from_config
from agent.engines import file_depth, kernel_stream_depth
from filters.app.layer import file_stream_depth

MiB = 1 << 20


def config(av: bool, **flows: int):
    return parse_config({"engines": {"av": {"enabled": av, "max_size": 10 * MiB}},
                         "dataplane": {"flows": flows}})


def test_with_the_antivirus_on_downloads_are_followed_to_its_max_size():
    cfg = config(True)
    assert file_depth(cfg) == 10 * MiB
    assert kernel_stream_depth(cfg) == file_stream_depth(10 * MiB) > 10 * MiB
    assert spec_from_config(cfg).stream_depth == kernel_stream_depth(cfg)
    pipe = pipeline_from_config(cfg, lambda rec: None)
    assert pipe.app is not None and pipe.app.settings.file_depth == 10 * MiB
    assert pipe.app.settings.http_response_body_limit == 100 * 1024  # the IPS's limit stays
    assert pipe.flows.stream_depth == 1 * MiB  # and the table's depth for every other flow


def test_with_no_file_engine_nothing_changes():
    cfg = config(False)
    assert file_depth(cfg) == 0 and kernel_stream_depth(cfg) == 1 * MiB
    assert config(True, stream_depth=0).dataplane.flows.stream_depth == 0
    assert kernel_stream_depth(config(True, stream_depth=0)) == 0  # no kernel cap stays none
    assert kernel_stream_depth(config(True, stream_depth=64 * MiB)) == 64 * MiB  # a larger setting wins
