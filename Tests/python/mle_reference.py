"""Independent two-qubit maximum-likelihood tomography, written from the papers with numpy/scipy.

Usage: mle_reference.py INPUT.json  ->  JSON on stdout

INPUT: {"projections": [{"a": [[hr, hi], [vr, vi]], "b": [...], "counts": n, "accidentals": a}, ...],
        "hedging": beta}
Model (James et al. PRA 64 052312; Blume-Kohout PRL 105 200504): M = T T^dagger, T lower
triangular; mu_k = <psi_k|M|psi_k> + a_k; minimise sum(mu - n log mu) - beta*log det(M/tr M).
Uses a different parametrisation order and optimiser (scipy BFGS, numeric gradient) from
Herald's L-BFGS, so agreement tests the estimator, not shared code.
"""
import json
import sys

import numpy as np
from scipy.optimize import minimize


def unpack(x):
    t = np.zeros((4, 4), complex)
    k = 0
    for i in range(4):
        for j in range(i + 1):
            if i == j:
                t[i, j] = x[k]
                k += 1
            else:
                t[i, j] = x[k] + 1j * x[k + 1]
                k += 2
    return t


def main(path):
    data = json.load(open(path))
    psis, n, a = [], [], []
    for p in data["projections"]:
        va = np.array([complex(*p["a"][0]), complex(*p["a"][1])])
        vb = np.array([complex(*p["b"][0]), complex(*p["b"][1])])
        psis.append(np.kron(va, vb))
        n.append(p["counts"])
        a.append(p["accidentals"])
    psis, n, a = np.array(psis), np.array(n, float), np.array(a, float)
    beta = data.get("hedging", 0.0)

    def nll(x):
        t = unpack(x)
        m = t @ t.conj().T
        mu = np.real(np.einsum("ki,ij,kj->k", psis.conj(), m, psis)) + a
        mu = np.maximum(mu, 1e-300)
        f = np.sum(mu - n * np.log(mu))
        if beta > 0:
            tr = np.real(np.trace(m))
            f -= beta * (np.log(max(np.linalg.det(m).real, 1e-300)) - 4 * np.log(tr))
        return f

    # Start from the maximally mixed state with the right total intensity.
    x0 = np.zeros(16)
    scale = np.sqrt(max(n.sum(), 1) / len(n))
    x0[[0, 2, 5, 9]] = scale
    best = None
    for method in ("BFGS", "Nelder-Mead"):
        r = minimize(nll, x0 if best is None else best.x, method=method, options={"maxiter": 20000, "gtol": 1e-10} if method == "BFGS" else {"maxiter": 40000, "xatol": 1e-10, "fatol": 1e-12})
        if best is None or r.fun < best.fun:
            best = r
    r = minimize(nll, best.x, method="BFGS", options={"maxiter": 20000, "gtol": 1e-11})
    t = unpack(r.x)
    m = t @ t.conj().T
    rho = m / np.trace(m).real
    phi = np.array([1, 0, 0, 1]) / np.sqrt(2)
    print(json.dumps({"rho_real": rho.real.ravel().tolist(), "rho_imag": rho.imag.ravel().tolist(),
                      "fidelity_phi+": float(np.real(phi @ rho @ phi)), "nll": float(r.fun), "intensity": float(np.trace(m).real)}))


if __name__ == "__main__":
    main(sys.argv[1])
