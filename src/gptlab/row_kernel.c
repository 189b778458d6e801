/* One row's product x @ Wt (+ bias), rounded the way MKL's multi-row sgemm rounds each
 * row: gptlab.row_kernel compiles this file and explains why. Measured with torch 2.13
 * (MKL) on an AVX-512 CPU: for 2 rows and more, each output is the bias (or 0) plus, for
 * each block of `block` inputs (384 there), one chain of fused multiply-adds over the
 * block started from 0. A 1-row product (a matrix-vector routine) rounds otherwise.
 * gptlab checks this kernel against the multi-row product for every shape before it
 * uses it, and keeps padding to 2 rows where they differ. */
#include <math.h>
#include <stdint.h>

void row_product(const float *x, const float *wt, const float *bias, float *out,
                 float *acc, int64_t n_in, int64_t n_out, int64_t block) {
    for (int64_t j = 0; j < n_out; j++)
        out[j] = bias ? bias[j] : 0.0f;
    for (int64_t k0 = 0; k0 < n_in; k0 += block) {
        int64_t k1 = k0 + block < n_in ? k0 + block : n_in;
        for (int64_t j = 0; j < n_out; j++)
            acc[j] = 0.0f;
        /* rows k.. of Wt are contiguous: each pass streams four of them once, vectorised
         * over j; the chain still adds x[k] w[k] before x[k+1] w[k+1] */
        int64_t k = k0;
        for (; k + 4 <= k1; k += 4) {
            const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
            const float *w0 = wt + k * n_out, *w1 = w0 + n_out, *w2 = w1 + n_out,
                        *w3 = w2 + n_out;
            for (int64_t j = 0; j < n_out; j++) /* fmaf: one rounding, like the FMA units */
                acc[j] = fmaf(x3, w3[j], fmaf(x2, w2[j], fmaf(x1, w1[j],
                                                              fmaf(x0, w0[j], acc[j]))));
        }
        for (; k < k1; k++) {
            const float xk = x[k];
            const float *w = wt + k * n_out;
            for (int64_t j = 0; j < n_out; j++)
                acc[j] = fmaf(xk, w[j], acc[j]);
        }
        for (int64_t j = 0; j < n_out; j++)
            out[j] += acc[j];
    }
}
