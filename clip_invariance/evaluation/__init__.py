"""Predictions -> tables and figures: the papers' protocols, with hyper-parameters chosen without the target.

:func:`evaluate_store` runs leave-one-domain-out (and open-class) rounds of
every method on an embedding store: ``_plan.py`` checks every argument
against the store first, ``_methods.py`` is the catalogue of methods and
their grids, ``_protocols.py`` the splits and the selection rules,
``_evaluate.py`` the rounds, ``_reporting.py`` the tables and plots
(pandas and matplotlib, imported when used), ``_selective.py`` the metrics
of a classifier that may abstain, and ``_demo.py`` the synthetic benchmark
of ``clip-invariance demo``.
"""

from ._demo import evaluate_synthetic
from ._evaluate import COLUMNS, evaluate_ablation, evaluate_image_folder, evaluate_store
from ._methods import (
    DEFAULT_METHODS,
    HYPER_PARAMETERS,
    ICM_METHODS,
    METHODS,
    PROMPT_LEARNING_METHODS,
    default_grids,
    make_method,
    make_probe,
)
from ._plan import DEFAULT_SELECTION, INTERVENTIONS, PROTOCOLS, TEMPLATES
from ._protocols import SELECTION_RULES, holdout_split, leave_one_domain_out, select_and_fit, selection_splits
from ._reporting import (
    chance_level,
    latex_tables,
    markdown_tables,
    method_label,
    plot_ablation,
    plot_results,
    run_environment,
    write_results,
)
from ._selective import abstention_threshold, confidence_roc_auc, risk_coverage_curve, selective_risk_auc

__all__ = [
    # evaluation runs
    "evaluate_store",
    "evaluate_image_folder",
    "evaluate_ablation",
    "evaluate_synthetic",
    "COLUMNS",
    "PROTOCOLS",
    "INTERVENTIONS",
    "TEMPLATES",
    # methods
    "METHODS",
    "DEFAULT_METHODS",
    "PROMPT_LEARNING_METHODS",
    "ICM_METHODS",
    "HYPER_PARAMETERS",
    "default_grids",
    "make_method",
    "make_probe",
    # protocols and selection rules
    "SELECTION_RULES",
    "DEFAULT_SELECTION",
    "leave_one_domain_out",
    "holdout_split",
    "selection_splits",
    "select_and_fit",
    # reporting
    "markdown_tables",
    "latex_tables",
    "method_label",
    "write_results",
    "run_environment",
    "chance_level",
    "plot_results",
    "plot_ablation",
    # selective classification
    "risk_coverage_curve",
    "selective_risk_auc",
    "confidence_roc_auc",
    "abstention_threshold",
]
