/* One decoding step of a Llama-style decoder for one token of one sequence, every block in one call
   (decode_step.py prepares the call; the modules' own forward is the plain path and computes the same
   numbers). At one token the arithmetic is small: PyTorch's ~30 operator calls per block, or even
   one ctypes call per piece, cost more than the block's matrix products. Here the whole step runs in
   one OpenMP parallel region: the matrix products share their tiles among the threads, the small
   pieces (norms, rotation, the gate) run on one thread while the others wait at a barrier.

   Per block, with x the residual stream:
     h = rms_norm(x); qkv = h Wqkv; rotate q and k; write k, v to the cache; y = attention; x += y Wo
     h = rms_norm(x); g = silu(h Wgate) * (h Wup); x += g Wdown                                    */

#include "code_tiles.c"

/* A block's entries in decode_layers' table (int64 each: addresses, or a matrix's code bits). */
enum { ATTN_NORM, QKV_CODES, QKV_SCALES, QKV_BITS, OUT_CODES, OUT_SCALES, OUT_BITS, MLP_NORM, UP_CODES, UP_SCALES,
       UP_BITS, DOWN_CODES, DOWN_SCALES, DOWN_BITS, LAYER_FIELDS };
/* decode_layers' sizes, in this order. */
enum { HEADS, KV_HEADS, HEAD_DIM, D_MODEL, D_FF, ROTARY, SLOT, CAPACITY, N_DIMS };

/* out = x / sqrt(mean(x^2) + eps) * weight (norm.py's RMSNorm), for one vector of n. */
static void rms_norm(const float *x, const float *weight, int64_t n, float eps, float *out) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    float inv = 1.0f / sqrtf(sum / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * inv * weight[i];
}

/* Rotate channel pairs (i, i + r/2) of one head's channels by the angles in cos, sin (r of them);
   channels past r pass unrotated (position.py's apply_rotary). */
static void rotate(float *x, const float *cos, const float *sin, int64_t r) {
    const int64_t half = r / 2;
    for (int64_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

/* exp(x) for 16 floats at once (libm's expf is one at a time): Cephes' expf, exp(x) = 2^n p(r) with
   n = round(x / ln 2) and |r| <= ln(2) / 2, within 2 ulp of expf; x below -87 gives about 0. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  /* ln 2 in two parts: exact n ln2_hi */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);  /* p 2^n */
}

/* A query head attends over cache slots 0..n-1 of its key/value head: softmax(q k^T scale) v, in
   16-float vectors along the head's channels (d a multiple of 16) and along the scores. */
static void attend_head(const float *q, const float *keys, const float *values, int64_t n, int64_t d, float scale,
                        float *scores, float *out) {
    float top = -INFINITY;
    for (int64_t s = 0; s < n; s++) {
        __m512 dot = _mm512_setzero_ps();
        for (int64_t i = 0; i < d; i += 16)
            dot = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(keys + s * d + i), dot);
        scores[s] = _mm512_reduce_add_ps(dot) * scale;
        top = fmaxf(top, scores[s]);
    }
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < n; s += 16) {
        __mmask16 live = n - s >= 16 ? 0xFFFF : (__mmask16)((1u << (n - s)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, scores + s), _mm512_set1_ps(top)));
        _mm512_mask_storeu_ps(scores + s, live, e);
        sum = _mm512_mask_add_ps(sum, live, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < d; i += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t s = 0; s < n; s++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[s]), _mm512_loadu_ps(values + s * d + i), acc);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(acc, inv));
    }
}

#define AT(field, type) ((type)(intptr_t)layer[field])

/* All blocks for one token: x (d_model) is the residual stream, updated in place; then the final norm
   into out. table: n_layers x LAYER_FIELDS; caches: n_layers x 2, the addresses of a layer's keys and
   values, each (kv_heads, capacity, head_dim) float32, written at slot dims[SLOT] and read up to it;
   cos, sin: the token's rotary angles. Returns 0, or 1 if out of memory. */
int decode_layers(float *x, int64_t n_layers, const int64_t *table, const int64_t *caches, const int64_t *dims,
                  const float *cos,
                  const float *sin, float eps, float scale, const float *final_norm, float *out, int threads) {
    const int64_t heads = dims[HEADS], kv_heads = dims[KV_HEADS], d = dims[HEAD_DIM], c = dims[D_MODEL];
    const int64_t ff = dims[D_FF], slot = dims[SLOT], capacity = dims[CAPACITY], n = slot + 1;
    const int64_t width = (heads + 2 * kv_heads) * d, widest = ff > heads * d ? (ff > c ? ff : c) : heads * d;
    float *scratch = malloc(sizeof(float) * (c + width + heads * d + 3 * ff + heads * n + 2 * (widest / BLOCK)));
    int8_t *xq = malloc(widest);
    if (!scratch || !xq) {
        free(scratch);
        free(xq);
        return 1;
    }
    float *h = scratch, *qkv = h + c, *attended = qkv + width, *gate_up = attended + heads * d;
    float *gated = gate_up + 2 * ff, *scores = gated + ff, *dx = scores + heads * n, *dx_sum = dx + widest / BLOCK;
#pragma omp parallel num_threads(threads)
    for (int64_t i = 0; i < n_layers; i++) {
        const int64_t *layer = table + i * LAYER_FIELDS;
        float *keys = (float *)(intptr_t)caches[2 * i], *values = (float *)(intptr_t)caches[2 * i + 1];
#pragma omp single
        {
            rms_norm(x, AT(ATTN_NORM, const float *), c, eps, h);
            round_activations(h, c, xq, dx, dx_sum);
        }
        tiles_product(xq, dx, dx_sum, 1, c, AT(QKV_CODES, const uint8_t *), AT(QKV_SCALES, const uint16_t *),
                      width / TILE, (int)layer[QKV_BITS], qkv, 0);
#pragma omp single
        {
            for (int64_t j = 0; j < heads + kv_heads; j++) rotate(qkv + j * d, cos, sin, dims[ROTARY]);  /* q, k */
            for (int64_t j = 0; j < kv_heads; j++)
                for (int64_t e = 0; e < d; e++) {
                    keys[(j * capacity + slot) * d + e] = qkv[(heads + j) * d + e];
                    values[(j * capacity + slot) * d + e] = qkv[(heads + kv_heads + j) * d + e];
                }
        }
#pragma omp for schedule(static)
        for (int64_t j = 0; j < heads; j++) {  /* heads / kv_heads query heads share a key/value head (GQA) */
            const int64_t kv = j / (heads / kv_heads);
            attend_head(qkv + j * d, keys + kv * capacity * d, values + kv * capacity * d, n, d, scale,
                        scores + j * n, attended + j * d);
        }
#pragma omp single
        round_activations(attended, heads * d, xq, dx, dx_sum);
        tiles_product(xq, dx, dx_sum, 1, heads * d, AT(OUT_CODES, const uint8_t *), AT(OUT_SCALES, const uint16_t *),
                      c / TILE, (int)layer[OUT_BITS], x, 1);
#pragma omp single
        {
            rms_norm(x, AT(MLP_NORM, const float *), c, eps, h);
            round_activations(h, c, xq, dx, dx_sum);
        }
        tiles_product(xq, dx, dx_sum, 1, c, AT(UP_CODES, const uint8_t *), AT(UP_SCALES, const uint16_t *),
                      2 * ff / TILE, (int)layer[UP_BITS], gate_up, 0);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < ff / BLOCK; b++) {  /* the gate, then its rounding, a block of 32 at a time */
            for (int64_t j = b * BLOCK; j < (b + 1) * BLOCK; j += 16) {  /* silu(g) = g / (1 + exp(-g)) */
                __m512 g = _mm512_loadu_ps(gate_up + j), up = _mm512_loadu_ps(gate_up + ff + j);
                __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
                _mm512_storeu_ps(gated + j, _mm512_mul_ps(silu, up));
            }
            round_activations(gated + b * BLOCK, BLOCK, xq + b * BLOCK, dx + b, dx_sum + b);
        }
        tiles_product(xq, dx, dx_sum, 1, ff, AT(DOWN_CODES, const uint8_t *), AT(DOWN_SCALES, const uint16_t *),
                      c / TILE, (int)layer[DOWN_BITS], x, 1);
    }
    rms_norm(x, final_norm, c, eps, out);
    free(scratch);
    free(xq);
    return 0;
}
