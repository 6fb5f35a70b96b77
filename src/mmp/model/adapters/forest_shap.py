"""Exact TreeSHAP for scikit-learn's forests through XGBoost's C library, without importing shap.

``import shap`` costs about 2.4 s (numba, scikit-learn's estimators, its plots), more than explaining a
test sample of a 100-tree forest. XGBoost's ``pred_contribs`` runs the same path-dependent TreeSHAP
algorithm (Lundberg et al.) that ``shap.TreeExplainer`` runs, with node covers as the weights. So the
forest is written as an XGBoost model, one per explained output: every tree with its splits, its leaf
values divided by the number of trees (the forest averages) and its weighted sample counts as covers
(what shap uses too), and XGBoost's C library explains it (:class:`.xgboost_capi.NativeBooster`).

Splits: scikit-learn goes left when ``x <= threshold`` (x as float32, the threshold a float64), XGBoost
when ``x < condition`` (both float32). The condition is the float32 just above the largest float32 not
above the threshold, which sends every float32 the same way.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mmp.model.adapters.xgboost_capi import NativeBooster, library, version

_NO_PARENT = 2147483647  # XGBoost's parent of the root


def usable() -> bool:
    """XGBoost's C library is there, in the version NativeBooster is written for."""
    from mmp.model.adapters import xgboost_capi

    try:
        return version(library())[0] == xgboost_capi.NATIVE_MAJOR
    except Exception:
        return False


def contributions(forest: Any, x: np.ndarray, outputs: list[int]) -> np.ndarray:
    """SHAP values with the bias last: (rows, features + 1) for one output, else (rows, outputs, features + 1).

    ``outputs``: the columns of the trees' values to explain (class indices; [0] for a regressor).
    """
    trees = [estimator.tree_ for estimator in forest.estimators_]
    features = int(forest.n_features_in_)
    per_output = [NativeBooster.from_json(_model(trees, features, k)).contributions(x) for k in outputs]
    return per_output[0] if len(per_output) == 1 else np.stack(per_output, axis=1)


def _model(trees: list[Any], features: int, output: int) -> bytes:
    major, minor, patch = version(library())
    count = len(trees)
    model = {
        "learner": {
            "attributes": {},
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(count)},
                    "iteration_indptr": list(range(count + 1)),
                    "tree_info": [0] * count,
                    "trees": [_tree(tree, index, features, output, count) for index, tree in enumerate(trees)],
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": "[0E0]",
                "boost_from_average": "0",
                "num_class": "0",
                "num_feature": str(features),
                "num_target": "1",
            },
            "objective": {"name": "reg:squarederror", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [major, minor, patch],
    }
    return json.dumps(model).encode()


def _tree(tree: Any, index: int, features: int, output: int, count: int) -> dict[str, Any]:
    order = _paired_order(tree.children_left, tree.children_right)  # old node id of each new one
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    leaf = tree.children_left[order] == -1
    left = np.where(leaf, -1, new_id[tree.children_left[order]])
    right = np.where(leaf, -1, new_id[tree.children_right[order]])
    nodes = len(order)
    parents = np.full(nodes, _NO_PARENT, dtype=np.int64)
    parents[left[~leaf]] = np.flatnonzero(~leaf)
    parents[right[~leaf]] = np.flatnonzero(~leaf)
    values = tree.value[order, 0, output] / count  # a classifier's values are class fractions (scikit-learn >= 1.4)
    conditions = np.where(leaf, values, _condition(tree.threshold[order]))
    missing_left = getattr(tree, "missing_go_to_left", None)
    default_left = np.zeros(nodes, np.int64) if missing_left is None else np.asarray(missing_left, np.int64)[order]
    return {
        "base_weights": values.astype(np.float32).tolist(),
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": default_left.tolist(),
        "id": index,
        "left_children": left.tolist(),
        "loss_changes": [0.0] * nodes,
        "parents": parents.tolist(),
        "right_children": right.tolist(),
        "split_conditions": conditions.astype(np.float32).tolist(),
        "split_indices": np.where(leaf, 0, tree.feature[order]).astype(np.int64).tolist(),
        "split_type": [0] * nodes,
        "sum_hessian": tree.weighted_n_node_samples[order].astype(np.float32).tolist(),
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(features),
            "num_nodes": str(nodes),
            "size_leaf_vector": "1",
        },
    }


def _paired_order(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Nodes in breadth-first order, each right child just after its left one: XGBoost's predictor takes the
    right child's id to be the left one's plus one (scikit-learn numbers its nodes depth first)."""
    order = [0]
    for node in order:  # grows while it is read
        if left[node] != -1:
            order += (int(left[node]), int(right[node]))
    return np.asarray(order, dtype=np.int64)


def _condition(threshold: np.ndarray) -> np.ndarray:
    """XGBoost's ``x < condition`` for scikit-learn's ``x <= threshold``, over float32 inputs."""
    below = threshold.astype(np.float32)
    below = np.where(below.astype(np.float64) > threshold, np.nextafter(below, np.float32(-np.inf)), below)
    return np.nextafter(below, np.float32(np.inf))
