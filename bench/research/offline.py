"""Issue-11 research, offline: thresholds, ensembles and selection rules in numpy.

    python bench/research/offline.py [--corpora reuters,debtags,...] [--work /tmp/q/runs]

Reads the ``scores.npz`` that `run_candidates.py train` wrote (validation and
test scores of each trained candidate) and ``baselines.json``. Every choice
(thresholds, ensemble members, the winner) is made on VALIDATION only; test
is only reported. To compare threshold policies fairly on validation (a
per-label threshold fitted on validation always looks best there), each
policy is also scored by 2-fold cross-fitting on validation: thresholds fitted
on one half, scored on the other, and the halves swapped (``cv`` columns).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from doctags_core.metrics import threshold_grid

WORK = os.environ.get("DOCTAGS_RESEARCH_WORK", "/tmp/q/runs")
GRID = threshold_grid(0.05, 0.95, 0.05)  # configs/reuters.yaml's sweep
FINE = threshold_grid(0.01, 0.99, 0.01)


# ---------------------------------------------------------------- metrics (fast, exact)


def counts(y: np.ndarray, pred: np.ndarray):
    """Per-label tp, fp, fn (int64)."""
    y = y.astype(bool)
    pred = pred.astype(bool)
    tp = (y & pred).sum(axis=0)
    fp = (~y & pred).sum(axis=0)
    fn = (y & ~pred).sum(axis=0)
    return tp, fp, fn


def f1s(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 as `summary_metrics` (zero_division=0, all labels)."""
    tp, fp, fn = counts(y, pred)
    denom = 2 * tp + fp + fn
    micro = 2 * tp.sum() / max(denom.sum(), 1)
    macro = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean()
    return float(micro), float(macro)


def decide(scores: np.ndarray, thresholds, top1: bool = False) -> np.ndarray:
    pred = scores >= np.asarray(thresholds, dtype=np.float32)[None, :]
    if top1:
        pred[np.arange(len(scores)), scores.argmax(axis=1)] = True
    return pred


# ---------------------------------------------------------------- threshold policies


def global_threshold(y, s, grid=GRID, metric="micro") -> float:
    best, best_t = -1.0, grid[0]
    for t in grid:
        micro, macro = f1s(y, s >= t)
        v = micro if metric == "micro" else macro if metric == "macro" else micro + macro
        if v > best + 1e-12:
            best, best_t = v, t
    return float(best_t)


def label_f1_curves(y, s, grid):
    """F1 of every label at every grid threshold: ``[len(grid), labels]``, plus tp/fp/fn."""
    y = y.astype(bool)
    pos = y.sum(axis=0)
    tps, fps = [], []
    for t in grid:
        p = s >= t
        tps.append((p & y).sum(axis=0))
        fps.append((p & ~y).sum(axis=0))
    tp, fp = np.array(tps), np.array(fps)
    fn = pos[None, :] - tp
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return f1, tp, fp, fn, pos


def per_label(y, s, t_global, min_pos=3, shrink=0.0, grid=GRID) -> np.ndarray:
    """Per-label F1-optimal thresholds; rare labels keep ``t_global``.

    ``shrink`` = m > 0 pulls each tuned threshold toward the global one by its
    validation support n: ``(n * t_label + m * t_global) / (n + m)``.
    """
    f1, *_, pos = label_f1_curves(y, s, grid)
    out = np.full(s.shape[1], t_global, dtype=np.float64)
    for i in range(s.shape[1]):
        if pos[i] < min_pos:
            continue
        best = np.flatnonzero(f1[:, i] >= f1[:, i].max() - 1e-12)
        t = grid[best[np.argmin(np.abs(grid[best] - t_global))]]
        out[i] = (pos[i] * t + shrink * t_global) / (pos[i] + shrink) if shrink else t
    return out


def frequency_buckets(train_counts: np.ndarray) -> np.ndarray:
    """Bucket of each label by train count n: min(floor(log2(n + 1)), 10).

    n = 0 | 1-2 | 3-6 | 7-14 | ... | >= 1023.
    """
    return np.minimum(np.floor(np.log2(np.maximum(train_counts, 1) + 1) / 1.0), 10).astype(int)


def bucketed(y, s, train_counts, t_global, grid=GRID, objective="micro") -> np.ndarray:
    """One threshold per train-frequency bucket, tuned on the pooled validation labels."""
    buckets = frequency_buckets(train_counts)
    out = np.full(s.shape[1], t_global, dtype=np.float64)
    _, tp, fp, fn, pos = label_f1_curves(y, s, grid)
    for b in np.unique(buckets):
        cols = buckets == b
        if pos[cols].sum() == 0:
            continue
        if objective == "micro":
            t_, f_, n_ = tp[:, cols].sum(1), fp[:, cols].sum(1), fn[:, cols].sum(1)
            v = 2 * t_ / np.maximum(2 * t_ + f_ + n_, 1)
        else:
            d = 2 * tp[:, cols] + fp[:, cols] + fn[:, cols]
            v = np.where(d > 0, 2 * tp[:, cols] / np.maximum(d, 1), 0).mean(1)
        best = np.flatnonzero(v >= v.max() - 1e-12)
        out[cols] = grid[best[np.argmin(np.abs(grid[best] - t_global))]]
    return out


def policies(train_counts):
    """name -> f(y_val, s_val) -> (thresholds, top1)."""

    def g(y, s):
        return np.full(s.shape[1], global_threshold(y, s)), False

    def g_fine(y, s):
        return np.full(s.shape[1], global_threshold(y, s, FINE)), False

    def g_top1(y, s):
        return g(y, s)[0], True

    def pl(min_pos, shrink=0.0, top1=False):
        def f(y, s):
            t = global_threshold(y, s)
            return per_label(y, s, t, min_pos, shrink), top1

        return f

    def bk(objective, top1=False):
        def f(y, s):
            t = global_threshold(y, s)
            return bucketed(y, s, train_counts, t, objective=objective), top1

        return f

    def bk_pl(min_pos, shrink, top1=False):
        # per-label thresholds shrunk toward the label's frequency-bucket threshold
        def f(y, s):
            t = global_threshold(y, s)
            base = bucketed(y, s, train_counts, t)
            f1, *_, pos = label_f1_curves(y, s, GRID)
            out = base.copy()
            for i in range(s.shape[1]):
                if pos[i] < min_pos:
                    continue
                best = np.flatnonzero(f1[:, i] >= f1[:, i].max() - 1e-12)
                ti = GRID[best[np.argmin(np.abs(GRID[best] - base[i]))]]
                out[i] = (pos[i] * ti + shrink * base[i]) / (pos[i] + shrink)
            return out, top1

        return f

    return {
        "global": g,
        "global_fine": g_fine,
        "global_top1": g_top1,
        "pl3": pl(3),
        "pl5": pl(5),
        "pl10": pl(10),
        "pl3_top1": pl(3, top1=True),
        "pl3_shr5": pl(3, 5.0),
        "pl3_shr10": pl(3, 10.0),
        "pl1_shr10": pl(1, 10.0),
        "pl1_shr10_top1": pl(1, 10.0, top1=True),
        "bucket_micro": bk("micro"),
        "bucket_macro": bk("macro"),
        "bucket_micro_top1": bk("micro", True),
        "bkpl3_shr5": bk_pl(3, 5.0),
        "bkpl3_shr10": bk_pl(3, 10.0),
        "bkpl1_shr10": bk_pl(1, 10.0),
        "bkpl1_shr10_top1": bk_pl(1, 10.0, True),
    }


def folds(n: int, k: int = 2, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def cross_fit(policy, y, s, k=2, seeds=(0, 1)) -> tuple[float, float]:
    """Validation micro/macro of a policy fitted on other folds (pooled decisions)."""
    micro, macro = [], []
    for seed in seeds:
        pred = np.zeros_like(y, dtype=bool)
        for idx in folds(len(y), k, seed):
            rest = np.setdiff1d(np.arange(len(y)), idx)
            t, top1 = policy(y[rest], s[rest])
            pred[idx] = decide(s[idx], t, top1)
        mi, ma = f1s(y, pred)
        micro.append(mi)
        macro.append(ma)
    return float(np.mean(micro)), float(np.mean(macro))


# ---------------------------------------------------------------- data


def load(corpus: str, variant: str, work: str = WORK) -> dict | None:
    path = os.path.join(work, corpus, variant, "scores.npz")
    if not os.path.exists(path):
        return None
    z = np.load(path)
    return {k: z[k] for k in z.files}


def train_counts(corpus: str, labels, work: str = WORK) -> np.ndarray:
    meta = json.load(open(os.path.join(work, corpus, "_shared", "data", "metadata.json")))
    c = meta["label_counts"]
    return np.array([c.get(str(lb), {}).get("train", 0) for lb in labels])


def ensemble(members: list[dict], weights=None) -> dict:
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    out = dict(members[0])
    for split in ("validation", "test"):
        out[f"s_{split}"] = sum(wi * m[f"s_{split}"] for wi, m in zip(w, members))
    out["train_seconds"] = sum(float(m["train_seconds"]) for m in members)
    return out


def evaluate(cand: dict, policy) -> dict:
    y_v, s_v, y_t, s_t = cand["y_validation"], cand["s_validation"], cand["y_test"], cand["s_test"]
    t, top1 = policy(y_v, s_v)
    vm, va = f1s(y_v, decide(s_v, t, top1))
    tm, ta = f1s(y_t, decide(s_t, t, top1))
    cm, ca = cross_fit(policy, y_v, s_v)
    return {
        "val_micro": vm,
        "val_macro": va,
        "cv_micro": cm,
        "cv_macro": ca,
        "test_micro": tm,
        "test_macro": ta,
    }


TOLERANCE = 0.01  # cv sums closer than this are not told apart (cf. the 1-SE rule)


def recipe(
    corpus: str,
    candidates: list[str],
    policy: str,
    work: str = WORK,
    rule: str = "cv_sum",
) -> dict | None:
    """The auto recipe on one corpus: every candidate thresholded by each policy of
    ``policy`` ("a+b": choose among a and b too), the winning (candidate, policy)
    chosen on VALIDATION only by ``rule``, reported on test.

    Rules: ``cv_sum`` maximises cross-fitted validation micro-F1 + macro-F1;
    ``val_sum`` the same on the validation decisions themselves; ``cv_sum_simple``
    takes, among the pairs within ``TOLERANCE`` of the best cv sum, the simplest
    policy (in the order given), then the cheapest candidate (in the order given).
    A candidate ``a+b`` is the average of the scores of ``a`` and ``b``.
    """
    loaded: dict[str, dict] = {}
    for name in candidates:
        parts = name.split("+")
        members = [loaded.get(p) or load(corpus, p, work) for p in parts]
        if any(m is None for m in members):
            return None
        for p, m in zip(parts, members):
            loaded[p] = m
        loaded[name] = members[0] if len(parts) == 1 else ensemble(members)
    labels = loaded[candidates[0]]["labels"]
    pols = policies(train_counts(corpus, labels, work))
    rows = []
    for name, pname in [(n, p) for n in candidates for p in policy.split("+")]:
        r = evaluate(loaded[name], pols[pname])
        key = (
            r["val_micro"] + r["val_macro"] if rule == "val_sum" else r["cv_micro"] + r["cv_macro"]
        )
        rows.append(
            {
                "candidate": name,
                "policy": pname,
                "score": key,
                **r,
                "train_s": float(loaded[name]["train_seconds"]),
            }
        )
    best = max(rows, key=lambda r: (round(r["score"], 6), -r["train_s"]))
    if rule == "cv_sum_simple":
        order_p = policy.split("+")
        close = [r for r in rows if r["score"] >= best["score"] - TOLERANCE]
        best = min(
            close,
            key=lambda r: (order_p.index(r["policy"]), candidates.index(r["candidate"])),
        )
    return {"corpus": corpus, "policy": policy, "rule": rule, "winner": best, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default="reuters,debtags,synth500short,synth20long")
    parser.add_argument("--variants", default="mlp,cnn")
    parser.add_argument("--policies", default="")
    parser.add_argument("--ensembles", default="mlp+cnn")
    parser.add_argument("--work", default=WORK)
    parser.add_argument("--json", help="write all rows here")
    parser.add_argument(
        "--recipe", help="candidates of the auto recipe, e.g. mlp,cnn,mlp+cnn (with --policies)"
    )
    parser.add_argument("--rule", default="cv_sum", choices=["cv_sum", "val_sum", "cv_sum_simple"])
    args = parser.parse_args()
    if args.recipe:
        for policy in (args.policies or "bkpl3_shr10").split(","):
            print(f"\n# recipe {args.recipe} / {policy} / {args.rule}")
            for corpus in args.corpora.split(","):
                out = recipe(corpus, args.recipe.split(","), policy, args.work, args.rule)
                if out is None:
                    print(f"  {corpus}: candidates missing")
                    continue
                w = out["winner"]
                path = os.path.join(args.work, corpus, "baselines.json")
                base = json.load(open(path)) if os.path.exists(path) else {}
                bmi = max((b["micro_f1"] for b in base.values()), default=float("nan"))
                bma = max((b["macro_f1"] for b in base.values()), default=float("nan"))
                ok = w["test_micro"] >= bmi + 0.02 and w["test_macro"] >= bma
                print(
                    f"  {corpus:14s} -> {w['candidate']}/{w['policy']} val {w['val_micro']:.4f}/"
                    f"{w['val_macro']:.4f} cv {w['cv_micro']:.4f}/{w['cv_macro']:.4f} "
                    f"test {w['test_micro']:.4f}/{w['test_macro']:.4f}  best baseline "
                    f"{bmi:.4f}/{bma:.4f}  {'MEETS' if ok else 'misses'} the must"
                )
                for r in out["rows"]:
                    print(
                        f"      {r['candidate'] + '/' + r['policy']:24s} "
                        f"cv {r['cv_micro']:.4f}/{r['cv_macro']:.4f}"
                        f" test {r['test_micro']:.4f}/{r['test_macro']:.4f}"
                        f" train {r['train_s']:.0f}s"
                    )
        return
    all_rows = []
    for corpus in args.corpora.split(","):
        cands = {}
        for v in args.variants.split(","):
            c = load(corpus, v, args.work)
            if c is not None:
                cands[v] = c
        for e in filter(None, args.ensembles.split(",")):
            parts = e.split("+")
            if all(p in cands for p in parts):
                cands[e] = ensemble([cands[p] for p in parts])
        if not cands:
            continue
        labels = next(iter(cands.values()))["labels"]
        pols = policies(train_counts(corpus, labels, args.work))
        chosen = args.policies.split(",") if args.policies else list(pols)
        base = {}
        path = os.path.join(args.work, corpus, "baselines.json")
        if os.path.exists(path):
            base = json.load(open(path))
        print(f"\n## {corpus}: {len(labels)} labels")
        for name, row in base.items():
            print(
                f"  {name:28s} val {row.get('val_micro_f1', float('nan')):.4f}/"
                f"{row.get('val_macro_f1', float('nan')):.4f}  "
                f"test {row['micro_f1']:.4f}/{row['macro_f1']:.4f}  train {row['train_s']:.0f}s"
            )
        print(
            f"  {'candidate/policy':28s} {'val mi/ma':>13s} {'cv mi/ma':>13s} {'test mi/ma':>13s}"
        )
        for cname, cand in cands.items():
            for pname in chosen:
                r = evaluate(cand, pols[pname])
                r.update(
                    corpus=corpus,
                    candidate=cname,
                    policy=pname,
                    train_s=float(cand["train_seconds"]),
                )
                all_rows.append(r)
                print(
                    f"  {cname + '/' + pname:28s} {r['val_micro']:.4f}/{r['val_macro']:.4f} "
                    f"{r['cv_micro']:.4f}/{r['cv_macro']:.4f} "
                    f"{r['test_micro']:.4f}/{r['test_macro']:.4f}"
                )
    if args.json:
        json.dump(all_rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
