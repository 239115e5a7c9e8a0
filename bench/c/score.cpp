// The CPU baseline of the mailpulse scorer: the same job as the streaming core, in C++ that the
// compiler vectorises (g++ -O3 -march=native), bit-exact with mailpulse/hdl/reference.py.
//
// Input: N dense sample beats (mailpulse/hdl/beats.py: tag u32, then D signed 16-bit features,
// 4 + 2D bytes each); output: N dense result beats (8 bytes: score | argmax << 24 | anomaly << 31,
// then the tag), exactly what the core reads from s_axis and writes to m_axis.  The model is the
// one the core holds: per projection k, D weights, the offset, the shift and B table values; the
// threshold.  For each sample and projection:
//     proj = sum_d x[d] * w[k][d]                  (exact in int32: |proj| < 2^21)
//     bin  = clamp((proj - off[k]) >> shift[k], 0, B - 1)    (arithmetic shift = floor)
//     val  = table[k][bin];  score += val;  argmax = first k with the largest val
// anomaly = score > threshold.
//
// D, K and B are compile-time constants (-DMP_D=8 -DMP_K=32 -DMP_B=128), as they are elaboration
// parameters of the core.  Samples are taken in blocks of BLOCK: the block's features are
// transposed to one array per feature, then every inner loop runs over the BLOCK samples with no
// dependence between them, which GCC turns into AVX2/AVX-512 code (multiply-adds, shifts, min/max,
// a gather for the table read, compares and blends for the argmax).  bench/cbaseline.py builds it
// and checks it against the reference model before it is timed.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#ifndef MP_D
#error "MP_D, MP_K and MP_B (the parameter set) must be defined"
#endif

namespace {

constexpr int D = MP_D, K = MP_K, B = MP_B;
constexpr int BLOCK = 256;
constexpr int SAMPLE_BYTES = 4 + 2 * D;
constexpr int RESULT_BYTES = 8;

struct Model {
    int32_t w[K][D];
    int32_t off[K];
    int32_t shift[K];
    int32_t table[K][B];
    uint32_t threshold;
};

void score_range(const Model& mdl, const uint8_t* in, uint8_t* out, int64_t begin, int64_t end) {
    alignas(64) int32_t xs[D][BLOCK];
    alignas(64) int32_t sc[BLOCK];
    alignas(64) int32_t best[BLOCK];
    alignas(64) int32_t arg[BLOCK];
    for (int64_t start = begin; start < end; start += BLOCK) {
        const int m = static_cast<int>(std::min<int64_t>(BLOCK, end - start));
        const uint8_t* beat = in + start * SAMPLE_BYTES;
        for (int i = 0; i < m; ++i) {
            for (int d = 0; d < D; ++d) {
                int16_t v;
                std::memcpy(&v, beat + i * SAMPLE_BYTES + 4 + 2 * d, 2);
                xs[d][i] = v;
            }
        }
        for (int i = m; i < BLOCK; ++i)
            for (int d = 0; d < D; ++d) xs[d][i] = 0;
        for (int i = 0; i < BLOCK; ++i) { sc[i] = 0; best[i] = -1; arg[i] = 0; }
        for (int k = 0; k < K; ++k) {
            const int32_t off = mdl.off[k], sh = mdl.shift[k];
            const int32_t* tab = mdl.table[k];
            int32_t wk[D];
            for (int d = 0; d < D; ++d) wk[d] = mdl.w[k][d];
            for (int i = 0; i < BLOCK; ++i) {
                int32_t p = 0;
                for (int d = 0; d < D; ++d) p += xs[d][i] * wk[d];
                int32_t b = (p - off) >> sh;
                b = b < 0 ? 0 : (b > B - 1 ? B - 1 : b);
                const int32_t v = tab[b];
                sc[i] += v;
                const bool more = v > best[i];      // strict: ties keep the lower k
                best[i] = more ? v : best[i];
                arg[i] = more ? k : arg[i];
            }
        }
        uint8_t* res = out + start * RESULT_BYTES;
        for (int i = 0; i < m; ++i) {
            const uint32_t s = static_cast<uint32_t>(sc[i]);
            const uint32_t w0 = s | (static_cast<uint32_t>(arg[i]) << 24) | (static_cast<uint32_t>(s > mdl.threshold) << 31);
            std::memcpy(res + i * RESULT_BYTES, &w0, 4);
            std::memcpy(res + i * RESULT_BYTES + 4, beat + i * SAMPLE_BYTES, 4);    // the tag
        }
    }
}

}  // namespace

extern "C" {

// The parameter set this library was built for: D, K, B (a guard for the Python side).
int mp_params(int* d, int* k, int* b) {
    *d = D; *k = K; *b = B;
    return SAMPLE_BYTES;
}

// Score n sample beats from `in` into n result beats in `out` with `threads` threads.
// weights: K*D int32 (row k = projection k), offsets: K int32, shifts: K int32, tables: K*B int32.
int mp_score(const uint8_t* in, uint8_t* out, int64_t n, const int32_t* weights, const int32_t* offsets,
             const int32_t* shifts, const int32_t* tables, uint32_t threshold, int threads) {
    if (n < 0 || threads < 1) return -1;
    Model mdl;
    std::memcpy(mdl.w, weights, sizeof mdl.w);
    std::memcpy(mdl.off, offsets, sizeof mdl.off);
    std::memcpy(mdl.shift, shifts, sizeof mdl.shift);
    std::memcpy(mdl.table, tables, sizeof mdl.table);
    mdl.threshold = threshold;
    if (threads == 1 || n < 4 * BLOCK) {
        score_range(mdl, in, out, 0, n);
        return 0;
    }
    std::vector<std::thread> pool;
    const int64_t per = ((n + threads - 1) / threads + BLOCK - 1) / BLOCK * BLOCK;
    for (int t = 0; t < threads; ++t) {
        const int64_t b = t * per, e = std::min<int64_t>(n, b + per);
        if (b >= e) break;
        pool.emplace_back(score_range, std::cref(mdl), in, out, b, e);
    }
    for (auto& th : pool) th.join();
    return 0;
}

}  // extern "C"
