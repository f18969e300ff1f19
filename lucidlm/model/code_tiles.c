/* x W^T for a matrix held as GGML-style blocks (a scale d and a min m per 32 weights of a row, codes
   c with w = d c + m), the way llama.cpp computes it: the activations are rounded to int8 per block of
   32 (scale dx), so a block's dot product is integer work, d dx sum(c xq) + m dx sum(xq).

   The layout puts 16 rows side by side ("a tile") so that one AVX-512 VNNI instruction (vpdpbusd)
   multiplies 4 consecutive weights of each of the 16 rows by the same 4 activations and adds them
   into that row's own 32-bit lane: no horizontal sums, 64 multiply-adds per instruction.

   codes, for tile t and block g, B bytes (B = 256 for 4-bit codes, 512 for 8-bit ones):
     8-bit: byte 64 i + 4 r + b is row r's code for column 4 i + b         (i = 0..7)
     4-bit: byte 64 i + 4 r + b holds row r's code for column 4 i + b in its low nibble and the code
            for column 16 + 4 i + b in its high nibble                      (i = 0..3)
   scales, for tile t and block g: 16 float16 d (rows 0..15), then, for 4-bit codes, 16 float16 m.
   8-bit codes are unsigned (c = q + 128, so m = -128 d, computed rather than stored: a Q8_0 matrix
   moves as many bytes as its file holds), because vpdpbusd multiplies unsigned bytes by signed ones.
   lucidlm/model/code_tiles.py builds these arrays and holds the plain path. */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "code tiles need AVX-512 with VNNI; lucidlm uses PyTorch's kernels on this CPU"
#endif

#define BLOCK 32
#define TILE 16
/* Bytes ahead to prefetch in a tile's stream of codes: the hardware prefetcher restarts at every
   matrix, and each of SmolLM2's is only a few hundred kilobytes (measured: 15-20% off a decoded
   token; 2-8 KiB ahead all do about as well). */
#define PREFETCH 4096

/* Bytes of codes per tile and block (16 rows x 32 codes), and float16 scales per tile and block: d for
   each of the 16 rows, and m for 4-bit codes. */
static inline int64_t block_codes(int bits) { return TILE * BLOCK * bits / 8; }
static inline int64_t block_scales(int bits) { return bits == 4 ? 2 * TILE : TILE; }

/* A block's 16 d and 16 m, from its scales (s) */
static inline void load_scales(const uint16_t *s, int bits, __m512 *d, __m512 *m) {
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s));
    *m = bits == 4 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + TILE)))
                   : _mm512_mul_ps(*d, _mm512_set1_ps(-128.0f));
}

/* x (K floats) -> xq (K int8) and per block its scale dx and dx * sum(xq): xq = round(x / dx), with
   dx = max |x| / 127 over the block (round to nearest even, the CPU's default rounding). */
static void round_activations(const float *x, int64_t k, int8_t *xq, float *dx, float *dx_sum) {
    for (int64_t g = 0; g < k / BLOCK; g++) {
        __m512 a = _mm512_loadu_ps(x + g * BLOCK), b = _mm512_loadu_ps(x + g * BLOCK + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        float d = amax / 127.0f;
        __m512 inv = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
        _mm_storeu_si128((__m128i *)(xq + g * BLOCK), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(xq + g * BLOCK + 16), _mm512_cvtepi32_epi8(qb));
        dx[g] = d;
        dx_sum[g] = d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    }
}

/* One tile's 16 outputs for one activation row. */
static __m512 tile_dot(const uint8_t *codes, const uint16_t *scales, int64_t blocks, int bits,
                       const int8_t *xq, const float *dx, const float *dx_sum) {
    const int64_t block_bytes = block_codes(bits);
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < blocks; g++) {
        const uint8_t *c = codes + g * block_bytes;
        for (int64_t line = 0; line < block_bytes; line += 64)  /* past the end is harmless: a hint */
            _mm_prefetch((const char *)c + PREFETCH + line, _MM_HINT_T0);
        const int32_t *x4 = (const int32_t *)(xq + g * BLOCK); /* the block's activations, 4 at a time */
        /* four independent sums: one chain of vpdpbusd (5 cycles each) would stall on itself */
        __m512i dot0 = _mm512_setzero_si512(), dot1 = dot0, dot2 = dot0, dot3 = dot0;
        if (bits == 4) {
            for (int i = 0; i < 4; i += 2) {
                __m512i v0 = _mm512_loadu_si512(c + 64 * i), v1 = _mm512_loadu_si512(c + 64 * (i + 1));
                dot0 = _mm512_dpbusd_epi32(dot0, _mm512_and_si512(v0, low_nibbles), _mm512_set1_epi32(x4[i]));
                dot1 = _mm512_dpbusd_epi32(dot1, _mm512_and_si512(_mm512_srli_epi16(v0, 4), low_nibbles),
                                           _mm512_set1_epi32(x4[i + 4]));
                dot2 = _mm512_dpbusd_epi32(dot2, _mm512_and_si512(v1, low_nibbles), _mm512_set1_epi32(x4[i + 1]));
                dot3 = _mm512_dpbusd_epi32(dot3, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low_nibbles),
                                           _mm512_set1_epi32(x4[i + 5]));
            }
        } else {
            for (int i = 0; i < 8; i += 4) {
                dot0 = _mm512_dpbusd_epi32(dot0, _mm512_loadu_si512(c + 64 * i), _mm512_set1_epi32(x4[i]));
                dot1 = _mm512_dpbusd_epi32(dot1, _mm512_loadu_si512(c + 64 * (i + 1)), _mm512_set1_epi32(x4[i + 1]));
                dot2 = _mm512_dpbusd_epi32(dot2, _mm512_loadu_si512(c + 64 * (i + 2)), _mm512_set1_epi32(x4[i + 2]));
                dot3 = _mm512_dpbusd_epi32(dot3, _mm512_loadu_si512(c + 64 * (i + 3)), _mm512_set1_epi32(x4[i + 3]));
            }
        }
        __m512i dot = _mm512_add_epi32(_mm512_add_epi32(dot0, dot1), _mm512_add_epi32(dot2, dot3));
        __m512 d, m;
        load_scales(scales + g * block_scales(bits), bits, &d, &m);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, _mm512_set1_ps(dx[g])), acc);
        acc = _mm512_fmadd_ps(m, _mm512_set1_ps(dx_sum[g]), acc);
    }
    return acc;
}

/* One tile's 16 outputs for ROWS activation rows (k apart in xq; their dx, dx_sum k/32 apart) into
   acc[0..ROWS-1]: each block's codes are loaded, and 4-bit ones split, once for all the rows. A
   prompt's many rows make those loads the bottleneck of tile_dot (measured on a 512-token prompt:
   1.6x faster with 4 rows than one at a time). */
#define ROWS 4
static void tile_dot_rows(const uint8_t *codes, const uint16_t *scales, int64_t blocks, int bits, const int8_t *xq,
                          int64_t k, const float *dx, const float *dx_sum, __m512 acc[ROWS]) {
    const int64_t block_bytes = block_codes(bits);
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    for (int r = 0; r < ROWS; r++)
        acc[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < blocks; g++) {
        const uint8_t *c = codes + g * block_bytes;
        for (int64_t line = 0; line < block_bytes; line += 64)
            _mm_prefetch((const char *)c + PREFETCH + line, _MM_HINT_T0);
        __m512i v[8]; /* v[i] multiplies activations 4 i .. 4 i + 3 of the block */
        if (bits == 4) {
            for (int i = 0; i < 4; i++) {
                __m512i both = _mm512_loadu_si512(c + 64 * i);
                v[i] = _mm512_and_si512(both, low_nibbles);
                v[i + 4] = _mm512_and_si512(_mm512_srli_epi16(both, 4), low_nibbles);
            }
        } else {
            for (int i = 0; i < 8; i++)
                v[i] = _mm512_loadu_si512(c + 64 * i);
        }
        __m512 d, m;
        load_scales(scales + g * block_scales(bits), bits, &d, &m);
        for (int r = 0; r < ROWS; r++) {
            const int32_t *x4 = (const int32_t *)(xq + r * k + g * BLOCK);
            __m512i dot0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_set1_epi32(x4[0]));
            __m512i dot1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[1], _mm512_set1_epi32(x4[1]));
            for (int i = 2; i < 8; i += 2) {
                dot0 = _mm512_dpbusd_epi32(dot0, v[i], _mm512_set1_epi32(x4[i]));
                dot1 = _mm512_dpbusd_epi32(dot1, v[i + 1], _mm512_set1_epi32(x4[i + 1]));
            }
            const int64_t at = r * (k / BLOCK) + g;
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(dot0, dot1)),
                                     _mm512_mul_ps(d, _mm512_set1_ps(dx[at])), acc[r]);
            acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx_sum[at]), acc[r]);
        }
    }
}

/* out (rows, n_tiles * 16) = x W^T, or += with `accumulate`, from activations already rounded (xq, dx,
   dx_sum: rows x k, rows x k/32, rows x k/32). The tiles are shared among the threads of the enclosing
   OpenMP parallel region (an "orphaned" omp for; outside a region, one thread does them all). */
static void tiles_product(const int8_t *xq, const float *dx, const float *dx_sum, int64_t rows, int64_t k,
                          const uint8_t *codes, const uint16_t *scales, int64_t n_tiles, int bits, float *out,
                          int accumulate) {
    const int64_t blocks = k / BLOCK;
    const int64_t tile_bytes = blocks * block_codes(bits), tile_scales = blocks * block_scales(bits);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tiles; t++) {
        int64_t r = 0;
        for (; r + ROWS <= rows; r += ROWS) {  /* a tile's codes stay in L1 across the rows */
            __m512 y[ROWS];
            tile_dot_rows(codes + t * tile_bytes, scales + t * tile_scales, blocks, bits, xq + r * k, k,
                          dx + r * blocks, dx_sum + r * blocks, y);
            for (int i = 0; i < ROWS; i++) {
                float *o = out + (r + i) * n_tiles * TILE + t * TILE;
                _mm512_storeu_ps(o, accumulate ? _mm512_add_ps(_mm512_loadu_ps(o), y[i]) : y[i]);
            }
        }
        for (; r < rows; r++) {
            __m512 y = tile_dot(codes + t * tile_bytes, scales + t * tile_scales, blocks, bits, xq + r * k,
                                dx + r * blocks, dx_sum + r * blocks);
            float *o = out + r * n_tiles * TILE + t * TILE;
            _mm512_storeu_ps(o, accumulate ? _mm512_add_ps(_mm512_loadu_ps(o), y) : y);
        }
    }
}

/* out (rows, n_tiles * 16) = x (rows, k) W^T, or out += x W^T with `accumulate` (a residual add), over
   `threads` OpenMP threads (PyTorch's own pool: the library is loaded after torch, so libgomp.so.1 is
   torch's). Returns 0, or 1 if out of memory. */
int code_tiles_matmul(const float *x, int64_t rows, int64_t k, const uint8_t *codes, const uint16_t *scales,
                      int64_t n_tiles, int bits, float *out, int accumulate, int threads) {
    const int64_t blocks = k / BLOCK;
    int8_t *xq = malloc(rows * k);
    float *dx = malloc(2 * rows * blocks * sizeof(float));
    if (!xq || !dx) {
        free(xq);
        free(dx);
        return 1;
    }
    float *dx_sum = dx + rows * blocks;
    for (int64_t r = 0; r < rows; r++)
        round_activations(x + r * k, k, xq + r * k, dx + r * blocks, dx_sum + r * blocks);
#pragma omp parallel num_threads(threads)
    tiles_product(xq, dx, dx_sum, rows, k, codes, scales, n_tiles, bits, out, accumulate);
    free(xq);
    free(dx);
    return 0;
}

/* Row `row` of the matrix as k floats, w = d c + m: an embedding lookup of one token, reading only
   that row's bytes (code_tiles.py's tile_rows is the same in PyTorch, for any number of rows). */
int code_tiles_row(const uint8_t *codes, const uint16_t *scales, int64_t k, int64_t row, int bits, float *out) {
    const int64_t blocks = k / BLOCK, t = row / TILE, r = row % TILE;
    const uint8_t *tile = codes + t * blocks * block_codes(bits);
    const uint16_t *tile_scales = scales + t * blocks * block_scales(bits);
    for (int64_t g = 0; g < blocks; g++) {
        const uint8_t *c = tile + g * block_codes(bits);
        const uint16_t *s = tile_scales + g * block_scales(bits);
        float d = _cvtsh_ss(s[r]), m = bits == 4 ? _cvtsh_ss(s[TILE + r]) : -128.0f * d;
        for (int j = 0; j < BLOCK; j++) {
            int code;
            if (bits == 8)
                code = c[64 * (j / 4) + 4 * r + j % 4];
            else if (j < 16)
                code = c[64 * (j / 4) + 4 * r + j % 4] & 15;
            else
                code = c[64 * ((j - 16) / 4) + 4 * r + j % 4] >> 4;
            out[g * BLOCK + j] = d * (float)code + m;
        }
    }
    return 0;
}

/* A file's GGML blocks -> the tiles, in one pass over the bytes (code_tiles.py's to_tiles is the same
   in PyTorch: decoding the codes to one byte each and laying them out took 0.2 s of the default
   model's load). blocks: n rows of k/32 blocks of Q4_0 (kind 2: d, 16 bytes of codes), Q4_1 (3: d,
   m, codes) or Q8_0 (8: d, 32 signed codes), as the file stores them. GGML's 4-bit byte j holds
   column j (low nibble) and column j + 16 (high nibble), which is what the 4-bit tile keeps in a
   byte, so each row's 4 bytes from j = 4 i move as one word. codes and scales hold n rounded up to
   16 rows; the padding rows are zero. Q4_0's min is -8 d: exact in float16 short of overflow, as in
   PyTorch. Q8_0's codes are made unsigned by flipping their top bit (its min, -128 d, is not stored).
   Returns 0, or 1 for an unknown kind. */
int code_tiles_from_blocks(const uint8_t *blocks, int64_t n, int64_t k, int kind, uint8_t *codes,
                           uint16_t *scales, int threads) {
    const int64_t n_blocks = k / BLOCK, n_tiles = (n + TILE - 1) / TILE;
    const int64_t block_in = kind == 2 ? 18 : kind == 3 ? 20 : kind == 8 ? 34 : 0;
    if (!block_in)
        return 1;
    const int bits = kind == 8 ? 8 : 4, words = bits == 8 ? 8 : 4, code_start = kind == 3 ? 4 : 2;
    const int64_t block_out = block_codes(bits);
    const uint32_t flip = bits == 8 ? 0x80808080u : 0;
    const int64_t scales_out = block_scales(bits);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n_tiles; t++) {
        for (int64_t g = 0; g < n_blocks; g++) {
            uint32_t *out = (uint32_t *)(codes + (t * n_blocks + g) * block_out);
            uint16_t *d_out = scales + (t * n_blocks + g) * scales_out, *m_out = d_out + TILE;
            for (int r = 0; r < TILE; r++) {
                const int64_t row = t * TILE + r;
                if (row >= n) {
                    for (int i = 0; i < words; i++)
                        out[i * TILE + r] = 0;
                    d_out[r] = 0;
                    if (bits == 4)
                        m_out[r] = 0;
                    continue;
                }
                const uint8_t *block = blocks + (row * n_blocks + g) * block_in;
                uint16_t d;
                memcpy(&d, block, 2);
                d_out[r] = d;
                if (kind == 3)
                    memcpy(&m_out[r], block + 2, 2);
                else if (kind == 2)
                    m_out[r] = _cvtss_sh(-8.0f * _cvtsh_ss(d), _MM_FROUND_TO_NEAREST_INT);
                for (int i = 0; i < words; i++) {
                    uint32_t word;
                    memcpy(&word, block + code_start + 4 * i, 4);
                    out[i * TILE + r] = word ^ flip;
                }
            }
        }
    }
    return 0;
}
