"""Poisson image editing (Pérez et al. 2003) with source or mixed gradients, 2D and 3D, on scipy sparse solvers.

Inside the mask the blended image ``f`` solves the discrete Poisson equation ``Δf = div v`` with Dirichlet boundary
``f = target`` on the mask's outer boundary. Discretely, for every masked voxel ``p`` with grid neighbours ``N_p``
(4 in 2D, 6 in 3D): ``|N_p| f_p - Σ_{q∈N_p∩Ω} f_q = Σ_{q∈N_p∖Ω} target_q + Σ_{q∈N_p} v_pq``, where the guidance
``v_pq`` is the source difference ``s_p - s_q`` or, in mixed mode, whichever of the source and target differences
has the larger magnitude (per channel and per edge). The system is assembled with index arrays only on the mask's
bounding box; one factorisation serves all channels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

#: Up to this many unknowns a sparse LU factorisation is used; above, conjugate gradients (measured faster from
#: ~1k unknowns in 2D and much faster in 3D, where LU fill-in costs seconds at ~30k unknowns).
DIRECT_SOLVER_MAX_UNKNOWNS = 2_000


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray, mixed: bool = True) -> np.ndarray:
    """Blend ``source`` into ``target`` inside ``mask``.

    ``target``, ``source``: ``(c, *spatial)`` arrays of the same shape (1 to 3 spatial axes); ``mask``:
    ``(*spatial)`` bool. Mask voxels on the array border are treated as boundary (they keep the target value), so
    every unknown has all its neighbours. Returns a new array (dtype of ``target``); outside the mask it equals the
    target exactly. No clipping is applied.
    """
    if target.shape != source.shape or target.shape[1:] != mask.shape:
        raise ValueError(f"shape mismatch: target {target.shape}, source {source.shape}, mask {mask.shape}")
    m = np.asarray(mask, bool).copy()
    for ax in range(m.ndim):  # border voxels cannot be unknowns: they would lack a neighbour
        idx = [slice(None)] * m.ndim
        idx[ax] = [0, -1]
        m[tuple(idx)] = False
    out = np.array(target, copy=True)
    if not m.any():
        return out
    nz = np.nonzero(m)
    box = tuple(slice(int(a.min()) - 1, int(a.max()) + 2) for a in nz)  # bbox plus a one-voxel ring
    mb = m[box]
    c = target.shape[0]
    tf = target[(slice(None), *box)].astype(np.float64).reshape(c, -1)
    sf = source[(slice(None), *box)].astype(np.float64).reshape(c, -1)
    p = np.flatnonzero(mb)
    n = p.size
    index = np.full(mb.size, -1, np.int64)
    index[p] = np.arange(n)
    strides = np.cumprod((mb.shape[1:] + (1,))[::-1])[::-1]  # C-order element strides of the box

    b = np.zeros((c, n))
    rows, cols = [], []
    for stride in strides:
        for q in (p + stride, p - stride):
            guide = sf[:, p] - sf[:, q]
            if mixed:
                gt = tf[:, p] - tf[:, q]
                guide = np.where(np.abs(guide) >= np.abs(gt), guide, gt)
            b += guide
            iq = index[q]
            unknown = iq >= 0
            rows.append(np.flatnonzero(unknown))
            cols.append(iq[unknown])
            b[:, ~unknown] += tf[:, q[~unknown]]  # Dirichlet boundary from the target
    r, k = np.concatenate(rows), np.concatenate(cols)
    lap = sp.csc_matrix((-np.ones(r.size), (r, k)), shape=(n, n)) + sp.identity(n, format="csc") * (2 * m.ndim)

    if n <= DIRECT_SOLVER_MAX_UNKNOWNS:
        solve = spla.factorized(lap)
        x = np.stack([solve(b[ch]) for ch in range(c)])
    else:  # symmetric positive definite, diagonally dominant: CG from the target, ~100-150 iterations at 90k unknowns
        x = np.empty((c, n))
        for ch in range(c):
            x[ch], info = spla.cg(lap, b[ch], x0=tf[ch, p], rtol=1e-8, maxiter=5000)
            if info != 0:
                x[ch] = spla.spsolve(lap, b[ch])
    tf[:, p] = x
    out[(slice(None), *box)] = tf.reshape((c, *mb.shape)).astype(out.dtype)
    return out


def discrete_laplacian(image: np.ndarray) -> np.ndarray:
    """The (2·ndim+1)-point Laplacian of ``(c, *spatial)`` ``image`` at interior voxels (border voxels set to 0)."""
    img = np.asarray(image, np.float64)
    lap = np.zeros_like(img)
    inner = (slice(None),) + (slice(1, -1),) * (img.ndim - 1)
    acc = -2 * (img.ndim - 1) * img[inner]
    for ax in range(1, img.ndim):
        for shift in (slice(2, None), slice(None, -2)):
            sl = list(inner)
            sl[ax] = shift
            acc = acc + img[tuple(sl)]
    lap[inner] = acc
    return lap
