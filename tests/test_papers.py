"""The papers' data: each number typed once, and the paper's tables agreeing with one another where the
paper prints the same experiment twice (a shifted row or a typo in our transcription breaks these)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maskdefense.attacks import get_suite
from maskdefense.papers import mad

PKG = Path(__file__).resolve().parents[1] / "src" / "maskdefense"


def _table4() -> dict[str, dict[str, float]]:
    return {r.label: r.paper for r in get_suite(mad.TABLE_SUITE["cifar10"]).rows}


def test_sweep_rows_are_the_table4_rows_in_order():
    assert mad.SWEEP_ROWS == ("Benign", *_table4())
    assert len(mad.SWEEP_ROWS) == 24
    for table, columns in ((mad.TABLE1, mad.TABLE1_RATES), (mad.TABLE3, mad.TABLE3_CELLS)):
        assert list(table) == list(mad.SWEEP_ROWS)
        assert all(list(cols) == list(columns) for cols in table.values())


def test_the_main_setting_is_the_same_number_in_tables_1_3_and_4():
    """Rate 3/4 with 8x8 training and 4x4 test cells is MAD itself: Table 1's 3/4 column, Table 3's 8x8/4x4
    column and Table 4's Defense column are one experiment."""
    t4 = _table4()
    assert mad.TABLE1["Benign"]["3/4"] == mad.TABLE3["Benign"][(8, 4)] == mad.BENIGN["cifar10"]
    for label, paper in t4.items():
        assert mad.TABLE1[label]["3/4"] == mad.TABLE3[label][(8, 4)] == paper["defense"], label


def test_table2_reads_tables_1_and_4():
    """Table 2's four cells per attack: plain unmasked = Table 1 rate 0; MAD unmasked = Table 4 Attack; MAD
    masked = Table 4 Defense (its Benign the table's benign row)."""
    t4 = _table4()
    assert set(mad.TABLE2) == {(False, False), (True, False), (False, True), (True, True)}
    assert mad.TABLE2[(False, False)]["Benign"] == mad.TABLE1["Benign"]["0"]
    assert mad.TABLE2[(True, True)]["Benign"] == mad.BENIGN["cifar10"]
    for a in mad.TABLE2_ATTACKS:
        assert mad.TABLE2[(False, False)][a] == mad.TABLE1[a]["0"], a
        assert mad.TABLE2[(True, False)][a] == t4[a]["attack"], a
        assert mad.TABLE2[(True, True)][a] == t4[a]["defense"], a


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "svhn"])
def test_attack_tables_improvement_is_defense_minus_attack(dataset):
    suite = get_suite(mad.TABLE_SUITE[dataset])
    assert len(suite.rows) == 23 and suite.dataset == dataset and suite.paper_benign == mad.BENIGN[dataset]
    assert suite.source.endswith(mad.TABLE_NAME[dataset])
    for r in suite.rows:
        # the paper rounds each of the three to 2 decimals: the difference may be off by one in the last place
        assert abs(r.paper["defense"] - r.paper["attack"] - r.paper["improvement"]) <= 1.5e-4, r.label


def test_clean_ablation_is_table2_benign_column():
    assert mad.CLEAN_ABLATION["cifar10"] == {k: v["Benign"] for k, v in mad.TABLE2.items()}
    assert mad.CLEAN_ABLATION["mnist"] == {(True, True): get_suite(mad.TABLE_SUITE["mnist"]).paper_benign}


def test_fig3_families_each_name_a_table_row():
    labels = list(_table4())
    for fam in mad.FIG3_ATTACKS:
        assert any(lab.startswith(fam + " ") for lab in labels), fam


def _float_literals(path: Path) -> list[float]:
    """Float literals of a module (docstrings are strings, not counted)."""
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, float)]


def test_experiments_hold_no_paper_numbers():
    """The paper's percentages live in papers/mad.py only: no experiment module types one of them."""
    paper = {v for v in _float_literals(PKG / "papers" / "mad.py") if v > 1.0}  # percentages as printed
    assert len(paper) > 100
    for path in sorted((PKG / "experiments").rglob("*.py")):
        found = sorted(paper & {v for v in _float_literals(path) if v > 1.0})
        assert not found, f"{path.relative_to(PKG)} types the paper's numbers {found[:5]}"
