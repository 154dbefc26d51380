#!/usr/bin/env python3
"""Minimax coefficients for codegen/vmath.c, by the Remez exchange algorithm
in mpmath (python3 fit_coefs.py > coefs.txt; needs mpmath, takes minutes).

Each fit approximates F(t) by sum_j c_j * t**(k0 + j) on [a, b], minimising
the largest weighted error |w(t) * (F(t) - sum)|, and prints the
coefficients rounded to float and to double as C hex literals, lowest power
first, with the error bound reached (before rounding), as log2, and the
leading coefficient split in two for the fits whose value it dominates.
"""
import struct

import mpmath as mp

mp.mp.dps = 50


def cheb_nodes(a, b, n):
    return [(a + b) / 2 - (b - a) / 2 * mp.cos(mp.pi * i / (n - 1)) for i in range(n)]


def extrema(err, grid):
    """Local extrema of |err| on the grid, refined by golden-section search."""
    ev = [err(t) for t in grid]
    found = []
    for i, v in enumerate(ev):
        if i > 0 and abs(ev[i - 1]) > abs(v):
            continue
        if i + 1 < len(ev) and abs(ev[i + 1]) > abs(v):
            continue
        if i in (0, len(ev) - 1):
            found.append((grid[i], v))
            continue
        lo, hi = grid[i - 1], grid[i + 1]
        for _ in range(50):
            m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
            if abs(err(m1)) > abs(err(m2)):
                hi = m2
            else:
                lo = m1
        t = (lo + hi) / 2
        found.append((t, err(t)))
    return found


def alternating(found, want):
    """The largest extremum of each run of one sign, trimmed to `want`."""
    alt = []
    for t, e in found:
        if alt and mp.sign(alt[-1][1]) == mp.sign(e):
            if abs(e) > abs(alt[-1][1]):
                alt[-1] = (t, e)
        else:
            alt.append((t, e))
    while len(alt) > want:
        alt.pop(0 if abs(alt[0][1]) < abs(alt[-1][1]) else -1)
    return alt


def remez(F, k0, n, a, b, w=lambda t: 1, grid=800, iters=40):
    a, b = mp.mpf(a), mp.mpf(b)
    powers = [k0 + j for j in range(n)]
    pts = cheb_nodes(a, b, n + 1)
    dense = cheb_nodes(a, b, grid)
    for _ in range(iters):
        A = mp.matrix(n + 1, n + 1)
        rhs = mp.matrix(n + 1, 1)
        for i, t in enumerate(pts):
            for j, p in enumerate(powers):
                A[i, j] = t ** p
            A[i, n] = (-1) ** i / w(t)
            rhs[i] = F(t)
        sol = mp.lu_solve(A, rhs)
        c = [sol[j] for j in range(n)]
        level = abs(sol[n])

        def err(t):
            return w(t) * (F(t) - sum(cj * t ** p for cj, p in zip(c, powers)))

        found = extrema(err, dense)
        worst = max(abs(e) for _, e in found)
        alt = alternating(found, n + 1)
        if len(alt) < n + 1 or worst / level - 1 < mp.mpf('1e-8'):
            break
        pts = [t for t, _ in alt]
    return c, worst


def hexf(x, single):
    v = float(x)
    if single:
        v = struct.unpack('f', struct.pack('f', v))[0]
    if not v:
        return '0.0'
    mant, exp = v.hex().split('p')
    return mant.rstrip('0').rstrip('.') + 'p' + exp


def emit(name, c, worst):
    bits = float(mp.log(worst, 2)) if worst > 0 else -999
    print('/* %s: max weighted error 2^%.1f */' % (name, bits))
    for single, suffix in ((True, 'f32'), (False, 'f64')):
        print('  %s: {%s},' % (suffix, ', '.join(hexf(x, single) for x in c)))
        c0 = float.fromhex(hexf(c[0], single))
        print('  %s: c0 = %s + %s' % (suffix, hexf(c0, single), hexf(c[0] - c0, single)))


def sqrt_or(s, f, limit):
    return f(mp.sqrt(s)) if s > 0 else limit


def main():
    """Each function has a float fit, then a longer double fit: vmath.c's float
    table is the first's f32 line, its double table the second's f64 line."""
    ln2h = mp.log(2) / 2 * mp.mpf('1.0005')
    # exp(r) = 1 + r + sum c_k r^k, relative error, |r| <= ln2/2
    for n in (5, 11):
        c, e = remez(lambda r: mp.exp(r) - 1 - r, 2, n, -ln2h, ln2h,
                     w=lambda r: 1 / mp.exp(r))
        emit('exp, r^2.. (%d terms)' % n, c, e)
    # 2 atanh(s) = 2s + 2s z Q(z), z = s^2, s in [-0.1716, 0.1716]
    zmax = mp.mpf('0.0300')
    Q = lambda z: sqrt_or(z, lambda s: (mp.atanh(s) - s) / s ** 3, mp.mpf(1) / 3)
    for n in (3, 8):
        c, e = remez(Q, 0, n, 0, zmax, w=lambda z: 1 / Q(z))
        emit('log atanh tail Q(z) (%d terms)' % n, c, e)
    # sin r = r + r z S(z), cos r = 1 - z/2 + z^2 C(z), z = r^2, |r| <= pi/4
    z4 = (mp.pi / 4 * mp.mpf('1.0001')) ** 2
    S = lambda z: sqrt_or(z, lambda r: (mp.sin(r) - r) / r ** 3, -mp.mpf(1) / 6)
    C = lambda z: (mp.cos(mp.sqrt(z)) - 1 + z / 2) / z ** 2 if z > 0 else mp.mpf(1) / 24
    for n in (4, 7):
        c, e = remez(S, 0, n, 0, z4, w=lambda z: 1 / S(z))
        emit('sin tail S(z) (%d terms)' % n, c, e)
        c, e = remez(C, 0, n, 0, z4, w=lambda z: 1 / C(z))
        emit('cos tail C(z) (%d terms)' % n, c, e)
    # erf: [0,1) erf(x)/x in s = x^2 (relative); [i,i+1) erf(i + 0.5 + t)
    E0 = lambda s: sqrt_or(s, lambda x: mp.erf(x) / x, 2 / mp.sqrt(mp.pi))
    for n, nbig, pieces in ((8, 10, 4), (13, 18, 6)):
        c, e = remez(E0, 0, n, 0, 1, w=lambda s: 1 / E0(s))
        emit('erf piece 0, erf(x)/x in x^2 (%d terms)' % n, c, e)
        for i in range(1, pieces):
            m = mp.mpf(i) + mp.mpf('0.5')
            c, e = remez(lambda t: mp.erf(m + t), 0, nbig, -0.5, 0.5)
            emit('erf piece %d, erf(%s + t) (%d terms)' % (i, m, nbig), c, e)


main()
