"""The benchmark: inverse dynamics models, taxonomies, metrics, scoring (the one path from frames through an IDM to
labels and scores), hashed suites, the evaluator and result bundles.

Public names load on first use::

    from evaluation import evaluate, load_suite, load_idm, EvalSettings
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

_EXPORTS = {
    **{name: "evaluation.evaluator" for name in (
        "EvalSettings", "evaluate", "evaluate_ground_truth", "model_info_for", "score_videos", "bundle_from_videos",
    )},  # fmt: skip
    **{name: "evaluation.scoring" for name in (
        "compute_metrics", "frame_agreement", "score_frames", "score_item", "taxonomy_for", "verify_metrics",
    )},  # fmt: skip
    **{name: "evaluation.suites" for name in ("Suite", "SuiteItem", "load_suite", "make_suite", "save_suite")},
    **{name: "evaluation.bundle" for name in ("ItemRecord", "ModelInfo", "ResultBundle", "load_bundle", "save_bundle")},
    "load_idm": "evaluation.idm.registry",
    "InverseDynamicsModel": "evaluation.idm.base",
    "Taxonomy": "evaluation.metrics.taxonomy",
    "get_taxonomy": "evaluation.metrics.taxonomy",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
