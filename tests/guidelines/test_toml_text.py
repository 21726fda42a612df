"""The commented-TOML writer, checked against Python's own TOML reader (``tomllib``) as the oracle."""

from __future__ import annotations

import math
import tomllib

import pytest

from trainwell.guidelines.toml_text import (
    Choice,
    Document,
    Item,
    Items,
    Table,
    document_data,
    render,
    string_text,
    value_text,
)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'a "quoted" word',
        "back\\slash",
        "tab\tnew\nline",
        "bell\x07 and del\x7f",
        "ünïcödé ℓ2 ≥ ÷",
        "",
        "C:\\data\\set.npz",
    ],
)
def test_strings_round_trip(value):
    assert tomllib.loads(f"v = {string_text(value)}")["v"] == value


@pytest.mark.parametrize(
    "value",
    [
        0,
        -3,
        10**12,
        1.0,
        0.001,
        5e-05,
        1e-7,
        2.5e10,
        -0.0,
        True,
        False,
        [1, 2.5, "x"],
        [],
        {"a": 1, "b c": [True]},
        {},
    ],
)
def test_values_round_trip(value):
    assert tomllib.loads(f"v = {value_text(value)}")["v"] == value


def test_infinities_and_nan():
    data = tomllib.loads(
        f"a = {value_text(math.inf)}\nb = {value_text(-math.inf)}\nc = {value_text(math.nan)}"
    )
    assert data["a"] == math.inf and data["b"] == -math.inf and math.isnan(data["c"])


def test_unsupported_values_are_refused():
    with pytest.raises(TypeError, match="cannot write a set"):
        value_text({1, 2})


def test_a_commented_document_parses_back_to_its_data():
    layers = Items(
        (
            Item({"type": "flatten"}, ("why flatten",)),
            Item(
                {
                    "type": "repeat",
                    "count": 3,
                    "layers": Items(
                        (
                            Item({"type": "dense", "units": 4}, ("why dense", "why units")),
                            Item({"type": "batch_norm"}, ("why bn",)),
                        )
                    ),
                },
                ("why repeat",),
            ),
        )
    )
    document = Document(
        header=("first line", "", "last line"),
        top=(Choice("name", "x y", "why name"),),
        tables=(
            Table("base.model", (Choice("layers", layers, "why layers"), Choice(None, None, "a note only"))),
            Table("odd key.x", (Choice("k", 1, ("why one", "why two")),)),
            Table("variants", (Choice("name", "a", "first"),), array=True, why=("the first variant",)),
            Table(
                "variants",
                (Choice("name", "b", "second"), Choice("set", {"m": layers}, "nested")),
                array=True,
            ),
        ),
    )
    text = render(document)
    assert tomllib.loads(text) == document_data(document)
    assert document_data(document)["variants"][1]["set"]["m"][1]["layers"][0] == {"type": "dense", "units": 4}
    lines = text.splitlines()
    assert lines[:3] == ["# first line", "#", "# last line"]
    assert '["odd key".x]' in lines and lines.count("[[variants]]") == 2
    # every comment sits right above what it explains
    assert lines[lines.index('    { type = "dense", units = 4 },') - 2 :][:2] == [
        "    # why dense",
        "    # why units",
    ]
    assert "# a note only" in lines and "# why one" in lines and "# the first variant" in lines
