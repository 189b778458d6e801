/* x @ Wt (+ bias) with a fixed rounding for every output: gptlab.row_kernel compiles this
 * file and explains why. Each output is the bias (or 0) plus, for each block of `block`
 * inputs, one chain of fused multiply-adds over the block started from 0 (in input
 * order). That is how MKL's multi-row sgemm rounds on an AVX-512 CPU with block 384
 * (torch 2.13), so one row here gets the bits it gets among many there; and since the
 * chain never depends on the other rows, any number of rows here gets them too. */
#include <math.h>
#include <stdint.h>

#define TILE_ROWS 4
#define TILE_COLS 64

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* One row: stream Wt row by row, four rows of it per pass, vectorised over j. */
static void one_row(const float *x, const float *wt, const float *bias, float *out,
                    float *acc, int64_t n_in, int64_t n_out, int64_t block) {
    for (int64_t j = 0; j < n_out; j++)
        out[j] = bias ? bias[j] : 0.0f;
    for (int64_t k0 = 0; k0 < n_in; k0 += block) {
        int64_t k1 = min64(k0 + block, n_in), k = k0;
        for (int64_t j = 0; j < n_out; j++)
            acc[j] = 0.0f;
        for (; k + 4 <= k1; k += 4) {  /* still x[k] w[k] first, then k + 1, ... */
            const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
            const float *w0 = wt + k * n_out, *w1 = w0 + n_out, *w2 = w1 + n_out,
                        *w3 = w2 + n_out;
            for (int64_t j = 0; j < n_out; j++) /* fmaf: one rounding, like FMA units */
                acc[j] = fmaf(x3, w3[j], fmaf(x2, w2[j], fmaf(x1, w1[j],
                                                              fmaf(x0, w0[j], acc[j]))));
        }
        for (; k < k1; k++)
            for (int64_t j = 0; j < n_out; j++)
                acc[j] = fmaf(x[k], wt[k * n_out + j], acc[j]);
        for (int64_t j = 0; j < n_out; j++)
            out[j] += acc[j];
    }
}

/* A tile of up to TILE_ROWS rows x TILE_COLS outputs: the same chain per output. With
 * whole tiles the bounds are constants, so the compiler keeps the sums in registers. */
#define TILE_BODY(NR, NC)                                                                 \
    float sum[TILE_ROWS][TILE_COLS], acc[TILE_ROWS][TILE_COLS];                           \
    for (int64_t r = 0; r < (NR); r++)                                                    \
        for (int64_t c = 0; c < (NC); c++)                                                \
            sum[r][c] = bias ? bias[c] : 0.0f;                                            \
    for (int64_t k0 = 0; k0 < n_in; k0 += block) {                                        \
        for (int64_t r = 0; r < (NR); r++)                                                \
            for (int64_t c = 0; c < (NC); c++)                                            \
                acc[r][c] = 0.0f;                                                         \
        for (int64_t k = k0; k < min64(k0 + block, n_in); k++)                            \
            for (int64_t r = 0; r < (NR); r++)                                            \
                for (int64_t c = 0; c < (NC); c++)                                        \
                    acc[r][c] = fmaf(x[r * n_in + k], wt[k * n_out + c], acc[r][c]);      \
        for (int64_t r = 0; r < (NR); r++)                                                \
            for (int64_t c = 0; c < (NC); c++)                                            \
                sum[r][c] += acc[r][c];                                                   \
    }                                                                                     \
    for (int64_t r = 0; r < (NR); r++)                                                    \
        for (int64_t c = 0; c < (NC); c++)                                                \
            out[r * n_out + c] = sum[r][c];

static void whole_tile(const float *x, const float *wt, const float *bias, float *out,
                       int64_t n_in, int64_t n_out, int64_t block) {
    TILE_BODY(TILE_ROWS, TILE_COLS)
}

static void part_tile(const float *x, const float *wt, const float *bias, float *out,
                      int64_t n_in, int64_t n_out, int64_t block, int64_t nr, int64_t nc) {
    TILE_BODY(nr, nc)
}

/* x (rows, n_in) @ wt (n_in, n_out) (+ bias) -> out (rows, n_out); acc: n_out floats of
 * scratch. Columns outer, so a column tile of Wt stays in cache for all the rows. */
void rows_product(const float *x, int64_t rows, const float *wt, const float *bias,
                  float *out, float *acc, int64_t n_in, int64_t n_out, int64_t block) {
    if (rows == 1) {
        one_row(x, wt, bias, out, acc, n_in, n_out, block);
        return;
    }
    for (int64_t j0 = 0; j0 < n_out; j0 += TILE_COLS) {
        int64_t nc = min64(TILE_COLS, n_out - j0);
        const float *b = bias ? bias + j0 : 0;
        for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
            int64_t nr = min64(TILE_ROWS, rows - r0);
            if (nr == TILE_ROWS && nc == TILE_COLS)
                whole_tile(x + r0 * n_in, wt + j0, b, out + r0 * n_out + j0, n_in, n_out,
                           block);
            else
                part_tile(x + r0 * n_in, wt + j0, b, out + r0 * n_out + j0, n_in, n_out,
                          block, nr, nc);
        }
    }
}
