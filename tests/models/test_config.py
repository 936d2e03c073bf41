"""Plant configuration: the examples load, and a broken file lists every problem with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.configfile import ConfigError, parse_plant

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
EXAMPLES = sorted((ROOT / "config").glob("**/*.example.yaml"))


def test_there_are_example_files() -> None:
    assert (ROOT / "config" / "plant.example.yaml") in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_loads(path: Path) -> None:
    cfg = parse_plant(path.read_text(), str(path))
    assert cfg.lines and (cfg.sources.opcua or cfg.sources.mqtt)


def test_example_documents_every_key_with_a_comment() -> None:
    """Each key line of the example is preceded by a comment (a sentence, then the default)."""
    lines = (ROOT / "config" / "plant.example.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- {"):
            continue
        key = stripped.removeprefix("- ").split(":", 1)[0]
        if ":" not in stripped or " " in key:
            continue
        # A key repeated later in a list (second station, second param) was documented once.
        if any(f"{key}:" in prev and "#" not in prev for prev in lines[:i]):
            continue
        if not lines[i - 1].strip().startswith("#"):
            undocumented.append(f"{i + 1}: {key}")
    assert undocumented == []


def test_broken_file_reports_every_problem_with_line_path_allowed_and_given() -> None:
    with pytest.raises(ConfigError) as info:
        parse_plant((DATA / "broken.yaml").read_text(), "broken.yaml")
    got = [str(p) for p in info.value.problems]
    assert got == [
        "broken.yaml:4 edge.window_s: must be > 0.0, got -1",
        "broken.yaml:12 lines[0].stations[0].params[0].lsl: must be a number below usl (3.2), "
        "got 'abc'",
        "broken.yaml:15 lines[0].stations[0].params[1].lsl: must be a number below usl (80.0), "
        "got 90.0",
        "broken.yaml:17 lines[0].stations[0].params[2].id: must be an identifier of letters, "
        "digits, '_', '.', '-' (no spaces or slashes), got 'web speed'",
        "broken.yaml:18 lines[0].stations[0].params[2].detector.kind: must be one of 'ewma', "
        "'cusum', 'shewhart' or 'stuck', got 'xbar'",
        "broken.yaml:18 lines[0].stations[0].params[2].detector.lam: must be <= 1.0, got 1.5",
        "broken.yaml:19 lines[0].stations[0].colour: is not a known key (a typo, or an option "
        "that does not exist)",
        "broken.yaml:21 broker.url: must be a URL like mqtt://HOST:PORT, got 'http://broker:1883'",
        "broken.yaml:29 sources.opcua[0].nodes[0]: exactly one of node_id and browse_path must "
        "be given, got {'node_id': 's=A', 'browse_path': 'A/B', 'equipment': 'lane01', "
        "'param': 'areal_weight'}",
    ]


def test_dangling_references_are_reported_after_structure_is_valid() -> None:
    text = (ROOT / "config" / "plant.example.yaml").read_text()
    text = text.replace("station: coater", "station: coatr").replace(
        "cell_temperature: t", "cell_temp: t"
    )
    with pytest.raises(ConfigError) as info:
        parse_plant(text, "p.yaml")
    got = [str(p) for p in info.value.problems]
    assert len(got) == 2
    assert (
        "sources.opcua[0].station: must be one of the stations of line line1 "
        "(coater, formation), got 'coatr'" in got[0]
    )
    assert (
        "sources.mqtt[0].payload.values.cell_temp: must be one of the params of station "
        "line1/formation" in got[1]
    )


def test_duplicate_keys_are_reported_not_collapsed() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:3 site.id: appears twice"):
        parse_plant("site:\n  id: a\n  id: b\nlines: [{id: l1, area: c}]\n", "x.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site: [\n", "x.yaml:2 is not valid YAML"),
        ("", "x.yaml:1 must be a mapping with site and lines, got an empty file"),
        ("- 1\n", "x.yaml:1 must be a mapping with site and lines, got list [1]"),
        ("lines: [{id: l1, area: c}]\n", "x.yaml:1 site: is required"),
    ],
)
def test_unusable_files_get_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plant(text, "x.yaml")
    assert str(info.value.problems[0]).startswith(message)


def test_secrets_do_not_print() -> None:
    cfg = parse_plant(
        "site: {id: p}\nlines: [{id: l, area: a}]\nbroker: {password: hunter2}\n", "x.yaml"
    )
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.broker)
    assert cfg.broker.password is not None
    assert cfg.broker.password.get_secret_value() == "hunter2"
