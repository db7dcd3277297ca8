"""lab/bench/doc.py: each benchmark command owns one marked section of docs/benchmarks.md."""
from pathlib import Path

from lab.bench.doc import read_section, write_section


def test_sections_are_replaced_in_place_and_others_kept(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Old single report\nrows\n")
    write_section(doc, "dataplane", "# Data path\nA")
    assert "Old single report" not in doc.read_text()
    write_section(doc, "filter", "## Web filter\nB")
    write_section(doc, "dataplane", "# Data path\nA2")
    text = doc.read_text()
    assert read_section(doc, "dataplane") == "# Data path\nA2"
    assert read_section(doc, "filter") == "## Web filter\nB"
    assert text.index("A2") < text.index("## Web filter")  # order kept
    assert text.count("bench:dataplane begin") == 1


def test_a_new_section_never_drops_an_unmarked_file(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Report\n")
    write_section(doc, "center", "## Center\nC")
    assert doc.read_text().startswith("# Report\n") and read_section(doc, "center") == "## Center\nC"
