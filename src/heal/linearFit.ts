// The closed-form fit of one healing map: accumulates, in float64, the normal equations of
//   T = argmin_T  sum_t ||r_t + T m_t - y_t||^2 + lambda ||T - I||_F^2
// over calibration tokens (r: residual after the kept layer's attention, m: its MLP output,
// y: the residual the removed layers would have produced) and solves them by Cholesky.
// Memory is two dim x dim float64 matrices, whatever the number of tokens.

import { OptionError } from "../errors.js";

/** The fitted map and how well it fits: residuals are ||R + M T^T - Y||_F / ||Y||_F. */
export interface LinearHealFit {
  dim: number;
  /** T (dim x dim, row-major): the kept layer's MLP output m becomes T m. */
  map: Float64Array;
  tokens: number;
  /** The ridge weight lambda = ridge * trace(M^T M) / dim. */
  lambda: number;
  /** Relative residual with T = I (plain removal). */
  residualBefore: number;
  /** Relative residual with the fitted T. */
  residualAfter: number;
}

/** Rows of tokens transposed per block: the d x d updates then run over contiguous columns. */
const BLOCK_ROWS = 64;

export class LinearHealAccumulator {
  readonly dim: number;
  tokens = 0;
  /** M^T M (dim x dim): the upper triangle while accumulating, mirrored by solve. */
  private readonly mtm: Float64Array;
  /** M^T D with D = Y - R (dim x dim): row i, column j = sum_t m_t[i] d_t[j]. */
  private readonly mtd: Float64Array;
  /** sum_t ||d_t||^2 and sum_t ||y_t||^2, for the residuals. */
  private ddSum = 0;
  private yySum = 0;
  private readonly mBlock: Float64Array;
  private readonly dBlock: Float64Array;

  constructor(dim: number) {
    this.dim = dim;
    this.mtm = new Float64Array(dim * dim);
    this.mtd = new Float64Array(dim * dim);
    this.mBlock = new Float64Array(dim * BLOCK_ROWS);
    this.dBlock = new Float64Array(dim * BLOCK_ROWS);
  }

  /** Adds `rows` tokens: m, r, y are (rows, dim) float32 row-major. */
  add(m: Float32Array, r: Float32Array, y: Float32Array, rows: number): void {
    const d = this.dim;
    if (m.length !== rows * d || r.length !== rows * d || y.length !== rows * d) {
      throw new OptionError(`healing fit: got ${m.length}, ${r.length}, ${y.length} values for ${rows} rows of ${d}`);
    }
    for (let start = 0; start < rows; start += BLOCK_ROWS) {
      const n = Math.min(BLOCK_ROWS, rows - start);
      // Column-major blocks: mBlock[i * n + t] = m_t[i].
      for (let t = 0; t < n; t++) {
        const o = (start + t) * d;
        for (let i = 0; i < d; i++) {
          const yi = y[o + i]!;
          const di = yi - r[o + i]!;
          this.mBlock[i * n + t] = m[o + i]!;
          this.dBlock[i * n + t] = di;
          this.ddSum += di * di;
          this.yySum += yi * yi;
        }
      }
      // M^T M is symmetric: only its upper triangle is summed here (solve mirrors it).
      for (let i = 0; i < d; i++) {
        const mi = i * n;
        for (let j = 0; j < d; j++) {
          const mj = j * n;
          let md = 0;
          if (j >= i) {
            let mm = 0;
            for (let t = 0; t < n; t++) {
              const a = this.mBlock[mi + t]!;
              mm += a * this.mBlock[mj + t]!;
              md += a * this.dBlock[mj + t]!;
            }
            this.mtm[i * d + j]! += mm;
          } else {
            for (let t = 0; t < n; t++) md += this.mBlock[mi + t]! * this.dBlock[mj + t]!;
          }
          this.mtd[i * d + j]! += md;
        }
      }
    }
    this.tokens += rows;
  }

  /**
   * Solves (M^T M + lambda I) T^T = M^T D + lambda I, lambda = ridge * trace(M^T M) / dim: the
   * ridge pulls T towards the identity, i.e. towards plain removal, where the data say little.
   */
  solve(ridge: number): LinearHealFit {
    const d = this.dim;
    if (this.tokens === 0) throw new OptionError("healing fit: no calibration tokens were seen", { hint: "give --data with at least one window" });
    if (!(ridge >= 0)) throw new OptionError(`--heal-ridge ${ridge} must be >= 0`, { option: "--heal-ridge" });
    for (let i = 0; i < d; i++) for (let j = i + 1; j < d; j++) this.mtm[j * d + i] = this.mtm[i * d + j]!;
    let trace = 0;
    for (let i = 0; i < d; i++) trace += this.mtm[i * d + i]!;
    const lambda = (ridge * trace) / d;
    const a = Float64Array.from(this.mtm);
    const b = Float64Array.from(this.mtd);
    for (let i = 0; i < d; i++) {
      a[i * d + i]! += lambda;
      b[i * d + i]! += lambda;
    }
    const x = choleskySolve(a, b, d); // x = T^T
    const map = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) map[i * d + j] = x[j * d + i]!;
    const yNorm = Math.sqrt(this.yySum) || 1;
    return {
      dim: d, map, tokens: this.tokens, lambda,
      residualBefore: Math.sqrt(Math.max(0, this.squaredResidualOfIdentity())) / yNorm,
      residualAfter: Math.sqrt(Math.max(0, this.squaredResidual(x))) / yNorm,
    };
  }

  /** Adds another accumulator's sums (tokens of other windows, same cut). */
  merge(other: LinearHealAccumulator): void {
    if (other.dim !== this.dim) throw new OptionError(`healing fit: cannot merge statistics of dimension ${other.dim} into ${this.dim}`);
    // Only the upper triangle of M^T M is read (solve and evaluate mirror it), so a mirrored one adds up the same.
    for (let i = 0; i < this.mtm.length; i++) {
      this.mtm[i]! += other.mtm[i]!;
      this.mtd[i]! += other.mtd[i]!;
    }
    this.ddSum += other.ddSum;
    this.yySum += other.yySum;
    this.tokens += other.tokens;
  }

  /** Plain removal as a fit: T = I, for a cut where no map beats it on held-out tokens. */
  identity(): LinearHealFit {
    const d = this.dim;
    const map = new Float64Array(d * d);
    for (let i = 0; i < d; i++) map[i * d + i] = 1;
    const residual = Math.sqrt(Math.max(0, this.squaredResidualOfIdentity())) / (Math.sqrt(this.yySum) || 1);
    return { dim: d, map, tokens: this.tokens, lambda: Infinity, residualBefore: residual, residualAfter: residual };
  }

  /**
   * Relative residuals of plain removal and of a map fitted on other tokens (held-out check):
   * these statistics, that map.
   */
  evaluate(map: Float64Array): { before: number; after: number } {
    const d = this.dim;
    if (map.length !== d * d) throw new OptionError(`a healing map of ${map.length} values does not fit dimension ${d}`);
    for (let i = 0; i < d; i++) for (let j = i + 1; j < d; j++) this.mtm[j * d + i] = this.mtm[i * d + j]!;
    const x = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) x[j * d + i] = map[i * d + j]!;
    const yNorm = Math.sqrt(this.yySum) || 1;
    return { before: Math.sqrt(Math.max(0, this.squaredResidualOfIdentity())) / yNorm, after: Math.sqrt(Math.max(0, this.squaredResidual(x))) / yNorm };
  }

  /** ||M - D||_F^2 = tr(M^T M) - 2 tr(M^T D) + ||D||^2: the residual of plain removal, in O(dim). */
  private squaredResidualOfIdentity(): number {
    let s = this.ddSum;
    for (let i = 0; i < this.dim; i++) s += this.mtm[i * this.dim + i]! - 2 * this.mtd[i * this.dim + i]!;
    return s;
  }

  /** ||M X - D||_F^2 = tr(X^T M^T M X) - 2 tr(X^T M^T D) + ||D||^2, for X = T^T (dim x dim). */
  private squaredResidual(x: Float64Array): number {
    const d = this.dim;
    let quadratic = 0;
    let cross = 0;
    const column = new Float64Array(d);
    for (let k = 0; k < d; k++) {
      // column = M^T M x_k, x_k the k-th column of X.
      column.fill(0);
      for (let i = 0; i < d; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += this.mtm[i * d + j]! * x[j * d + k]!;
        column[i] = s;
      }
      for (let i = 0; i < d; i++) {
        quadratic += x[i * d + k]! * column[i]!;
        cross += x[i * d + k]! * this.mtd[i * d + k]!;
      }
    }
    return quadratic - 2 * cross + this.ddSum;
  }
}

/** Solves A X = B for symmetric positive definite A (n x n) and B (n x n); A is overwritten by its factor. */
export function choleskySolve(a: Float64Array, b: Float64Array, n: number): Float64Array {
  // A = L L^T, L in the lower triangle of a.
  for (let j = 0; j < n; j++) {
    let s = a[j * n + j]!;
    for (let k = 0; k < j; k++) s -= a[j * n + k]! * a[j * n + k]!;
    if (!(s > 0)) {
      throw new OptionError("healing fit: the MLP outputs of the calibration tokens do not span the hidden space (the normal equations are singular)", {
        option: "--heal-ridge", hint: "give more calibration text (--data, --max-tokens) or a larger --heal-ridge",
      });
    }
    const ljj = Math.sqrt(s);
    a[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let t = a[i * n + j]!;
      for (let k = 0; k < j; k++) t -= a[i * n + k]! * a[j * n + k]!;
      a[i * n + j] = t / ljj;
    }
  }
  const x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    // Forward: L z = b_c; backward: L^T x_c = z (column c of x, stride n).
    for (let i = 0; i < n; i++) {
      let s = x[i * n + c]!;
      for (let k = 0; k < i; k++) s -= a[i * n + k]! * x[k * n + c]!;
      x[i * n + c] = s / a[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = x[i * n + c]!;
      for (let k = i + 1; k < n; k++) s -= a[k * n + i]! * x[k * n + c]!;
      x[i * n + c] = s / a[i * n + i]!;
    }
  }
  return x;
}
