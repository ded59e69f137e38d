"""Golden values for `prune --heal linear`'s fit (src/heal/linearFit.ts), computed independently
with numpy: T = argmin ||R + M T^T - Y||_F^2 + lam ||T - I||_F^2, lam = ridge * trace(M^T M) / d,
solved as one stacked least-squares problem with numpy.linalg.lstsq (no normal equations).
Inputs are seeded float32 values, written into the golden so the TS test feeds the same numbers.

    .venv/bin/python test/oracle/heal_fit_oracle.py > test/oracle/golden/heal_fit.json
"""
import json

import numpy as np


def case(seed: int, n: int, d: int, ridge: float) -> dict:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, d)).astype(np.float32)
    r = rng.standard_normal((n, d)).astype(np.float32)
    # y depends on m through a known map plus noise, so the fit has something to find.
    true_map = (np.eye(d) + 0.3 * rng.standard_normal((d, d))).astype(np.float32)
    y = (r + m @ true_map.T + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    M, R, Y = (a.astype(np.float64) for a in (m, r, y))
    lam = ridge * np.trace(M.T @ M) / d
    # [M; sqrt(lam) I] X = [Y - R; sqrt(lam) I], X = T^T.
    A = np.vstack([M, np.sqrt(lam) * np.eye(d)])
    B = np.vstack([Y - R, np.sqrt(lam) * np.eye(d)])
    X, *_ = np.linalg.lstsq(A, B, rcond=None)
    T = X.T
    ynorm = np.linalg.norm(Y)
    return {
        "seed": seed, "rows": n, "dim": d, "ridge": ridge,
        "m": m.ravel().tolist(), "r": r.ravel().tolist(), "y": y.ravel().tolist(),
        "map": T.ravel().tolist(), "lambda": float(lam),
        "residualBefore": float(np.linalg.norm(R + M - Y) / ynorm),
        "residualAfter": float(np.linalg.norm(R + M @ T.T - Y) / ynorm),
    }


if __name__ == "__main__":
    cases = [case(1, 150, 8, 1e-3), case(2, 12, 8, 0.5)]  # well determined; fewer tokens than dims (the ridge carries it)
    print(json.dumps({"generator": "test/oracle/heal_fit_oracle.py", "numpy": np.__version__, "cases": cases}))
