"""SFM-Defense (Yu, Wang et al. 2022): the attack settings of Section 4, as suites."""

from __future__ import annotations

from ..attacks.suites import Suite, SuiteRow, add_suite

_SFM_SRC = "Yu, Wang et al. 2022, SFM-Defense (Section 4: attack settings)"

add_suite(Suite(
    "sfm-transfer", "SFM black-box attacks: PGD, MIM, Diverse at Linf 8/255 and 16/255 (30 steps of 1/255)",
    tuple(
        SuiteRow(f"{lab}-{k}", f"{spec}:eps={k}/255,steps=30,{step}=1/255")
        for lab, spec, step in (("PGD", "pgd-linf", "abs_stepsize"), ("MIM", "mi-fgsm", "stepsize"),
                                ("Diverse", "di-mi-fgsm", "stepsize"))
        for k in (8, 16)
    ),
    _SFM_SRC, "cifar10", None,
    ("'Diverse' is taken as M-DI2-FGSM (momentum + diverse inputs, p=0.5); the paper gives no DI "
     "parameters. Run with threat black-box (transfer from a surrogate).",),
))
add_suite(Suite(
    "sfm-graybox", "SFM gray/white-box attacks: FGSM and PGD at Linf 8/255, 16/255; CW (5 x 20 steps, c0=0.1)",
    (
        SuiteRow("FGSM-8", "fgsm-linf:eps=8/255"), SuiteRow("FGSM-16", "fgsm-linf:eps=16/255"),
        SuiteRow("PGD-8", "pgd-linf:eps=8/255,steps=30,abs_stepsize=1/255"),
        SuiteRow("PGD-16", "pgd-linf:eps=16/255,steps=30,abs_stepsize=1/255"),
        SuiteRow("CW", "cw-l2:eps=inf,binary_search_steps=5,steps=20,initial_const=0.1"),
    ),
    _SFM_SRC, "cifar10", None, ("CW is unbounded (eps=inf) as in the paper; its norms are recorded.",),
))
