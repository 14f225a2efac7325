/* The codec's exact arithmetic as compiled kernels: the operations of pixelcnn.coding.exact, fused.
 *
 * Each function computes, in one call, what a sequence of the reference rules computes one torch operation at a
 * time (blocks.py, elementary.py), with the same IEEE-754 operations in the same order wherever the order is
 * rounded, so the results are bit for bit those of the reference:
 *
 *   affine   a linear map of a (possibly strided) window per row: the row rounded to block floating point
 *            (blocks.to_blocks), its exact product with a weight rounded per column (gemm), scaled by the two
 *            blocks' powers of two, then bias, residual and ReLU as the reference adds them.
 *   elementwise     sigmoid, tanh, exp, expm1, elu of contiguous values.
 *   gated_column    a Gated PixelCNN's step at one position, every layer and the output head (fused.GatedColumn).
 *   gated_row       a Gated PixelCNN layer's row start: the vertical stack's row above, its gate into the next
 *                   layer's cache, and the row's bias for the horizontal stack.
 *
 * affine, gated_column and gated_row split their rows (images, positions) over the threads they are given
 * (split_rows: a pool of the extension's own).
 *   rows_softmax    log_softmax, softmax or quantize.quantized_weights of contiguous rows (the exact sum of
 *                   blocks.exact_sum, exp and log from elementary.py's tables).
 *
 * The tables are elementary.py's, handed over once by set_tables (pointers to tensors the caller keeps alive).
 *
 * The products of rounded operands are integers times powers of two whose sums float64 holds exactly, so the
 * products' summation order, vector width and fused multiply-adds cannot change a bit there (gemm below
 * contracts). Everything else is compiled without contraction (-ffp-contract=off, in pyproject.toml) and without
 * fast-math: each C expression is the reference's own rounding, in its order (-fno-trapping-math only lets loops
 * with selects vectorize; no result depends on it).
 *
 * Pointers and strides come from Python as integers (tensor.data_ptr(), strides in elements). A return value of
 * -1 means a row held a value that is not finite, where the reference's rules are the definition: the caller
 * computes that call with them instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KERNELS_VERSION 7
#define ROUNDER 6755399441055744.0 /* 1.5 * 2**52: x + ROUNDER - ROUNDER rounds |x| < 2**51 to an integer */
#define SIGMOID_RANGE 32.0
#define SIGMOID_SCALE 1024.0       /* the sigmoid table's steps per unit, 2**SIGMOID_STEP */

enum { RELU_IN = 1, RELU_OUT = 2 };
/* On x86-64 the loops are compiled for AVX-512, AVX2 and the baseline, the CPU's best chosen at load
 * (target_clones); elsewhere (PIXELCNN_PORTABLE_KERNELS builds that form here, for the tests) for the build's
 * baseline alone. */
#if defined(__x86_64__) && !defined(PIXELCNN_PORTABLE_KERNELS)
#define X86_VARIANTS 1
#define VECTOR __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define X86_VARIANTS 0
#define VECTOR
#endif
/* Helpers are inlined always: a helper left out of line is compiled for the default target, not the caller's. */
#define INLINE static inline __attribute__((always_inline))

INLINE double pow2i(int64_t e) {
    uint64_t bits = (uint64_t)(e + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

INLINE double relu(double v) { return v < 0.0 ? 0.0 : v; } /* torch.relu: -0.0 and NaN stay */

/* blocks.to_blocks of one block: 2**(bits - e), 2**e > peak (frexp; e = 0 for 0), e clamped to [-900, 900]. */
INLINE int block_up(double peak, int bits, double *up) {
    *up = 1.0;
    if (!isfinite(peak)) return -1;
    int e;
    frexp(peak, &e);
    e = e < -900 ? -900 : e > 900 ? 900 : e;
    *up = pow2i((int64_t)bits - e);
    return 0;
}

/* ----- the exact product: acc (rows, n) = xq (rows, k) times wq (k, n) --------------------------------------
 * xq holds rounded values (integers times one power of two per row) and wq a weight's integers as int32
 * (|wq| <= 2**25): every product and partial sum is an integer below 2**53, so any summation order, vector width
 * or fused multiply-add gives the same bits, and each CPU gets the register tiles that suit it. The weight's
 * columns are read as panels of PANEL float64 columns (pack: k rows of PANEL values each, panel after panel), made
 * once for a weight the caller keeps (fused.Affine.panels) or per call in scratch; a tile keeps MR rows by NV
 * vectors of sums in registers over the whole reduction, MC rows at a time passing over every panel while they stay
 * in cache. A row or two are multiplied from wq directly (converting a whole weight would cost as much). The
 * variants (x86-64-v4: AVX-512; v3: AVX2 and FMA; the baseline: SSE2 on x86-64, the build's target elsewhere) are
 * chosen once from what the CPU has; set_isa picks another that it also has (the tests run each). Every variant reads
 * the same panels. */
typedef double v8d __attribute__((vector_size(64), aligned(8)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));
typedef double v4d __attribute__((vector_size(32), aligned(8)));
typedef int32_t v4i __attribute__((vector_size(16), aligned(4)));
typedef double v2d __attribute__((vector_size(16), aligned(8)));
typedef int32_t v2i __attribute__((vector_size(8), aligned(4)));

#define PANEL 16                /* columns of a panel */
#define MC 48                   /* rows a product keeps in cache while it passes over the panels */
#define DIRECT_ROWS 3           /* fewer rows are multiplied from the weight's integers, without panels */

/* The whole panels of (k, n) int32 wq as float64: panel p, row i, column j at panel[(p k + i) PANEL + j]. */
VECTOR static void pack_panels(double *panel, const int32_t *wq, int64_t k, int64_t n) {
    for (int64_t p = 0; p < n / PANEL; p++)
        for (int64_t i = 0; i < k; i++)
            for (int j = 0; j < PANEL; j++) panel[(p * k + i) * PANEL + j] = (double)wq[i * n + p * PANEL + j];
}

/* GEMM_TILE(NAME, VD, NV, MR): acc[r][0 .. NV vectors) for r < MR (rows acc_s apart) from x's MR rows (k apart)
 * and NV vectors of a panel's columns (its rows PANEL apart). */
#define GEMM_TILE(NAME, VD, NV, MR)                                                                                 \
    INLINE void NAME(double *acc, int64_t acc_s, const double *x, int64_t k,  \
                                                          const double *panel) {                                   \
        enum { LANES = sizeof(VD) / sizeof(double) };                                                               \
        VD a[MR][NV];                                                                                               \
        for (int r = 0; r < MR; r++)                                                                                \
            for (int v = 0; v < NV; v++) a[r][v] = (VD){0};                                                         \
        for (int64_t i = 0; i < k; i++) {                                                                           \
            VD wv[NV];                                                                                              \
            for (int v = 0; v < NV; v++) wv[v] = *(const VD *)(panel + i * PANEL + v * LANES);                      \
            for (int r = 0; r < MR; r++) {                                                                          \
                const VD c = x[r * k + i] - (VD){0};          /* a broadcast (x - 0 is x, -0 included) */          \
                for (int v = 0; v < NV; v++) a[r][v] += c * wv[v];                                                  \
            }                                                                                                       \
        }                                                                                                           \
        for (int r = 0; r < MR; r++)                                                                                \
            for (int v = 0; v < NV; v++) *(VD *)(acc + r * acc_s + v * LANES) = a[r][v];                            \
    }

/* GEMM_DIRECT(NAME, VD, VI, NV): acc[0 .. NV vectors) for one row, the weight's int32 converted as read. */
#define GEMM_DIRECT(NAME, VD, VI, NV)                                                                               \
    INLINE void NAME(double *acc, const double *x, int64_t k,                 \
                                                          const int32_t *wq, int64_t n) {                          \
        enum { LANES = sizeof(VD) / sizeof(double) };                                                               \
        VD a[NV];                                                                                                   \
        for (int v = 0; v < NV; v++) a[v] = (VD){0};                                                                \
        for (int64_t i = 0; i < k; i++) {                                                                           \
            const VD c = x[i] - (VD){0};                                                                            \
            for (int v = 0; v < NV; v++)                                                                            \
                a[v] += c * __builtin_convertvector(*(const VI *)(wq + i * n + v * LANES), VD);                     \
        }                                                                                                           \
        for (int v = 0; v < NV; v++) *(VD *)(acc + v * LANES) = a[v];                                               \
    }

/* GEMM(NAME, VD, VI, NV, MR): NAME(acc, acc_s, x, rows, k, wq, n, panel). With panels: per panel, its columns NV
 * vectors at a time, by tiles of MR rows (the last rows by 4, 2, 1). Without (panel NULL): each row from wq, 4 NV
 * then NV vectors of columns at a time. The columns past the last whole panel or tile are summed one at a time. */
#define GEMM(NAME, VD, VI, NV, MR)                                                                                  \
    GEMM_TILE(NAME##_tile, VD, NV, MR)                                                                              \
    GEMM_TILE(NAME##_tile4, VD, NV, 4)                                                                              \
    GEMM_TILE(NAME##_tile2, VD, NV, 2)                                                                              \
    GEMM_TILE(NAME##_tile1, VD, NV, 1)                                                                              \
    GEMM_DIRECT(NAME##_wide, VD, VI, 4 * NV)                                                                        \
    GEMM_DIRECT(NAME##_narrow, VD, VI, NV)                                                                          \
    static void NAME(double *acc, int64_t acc_s, const double *x, int64_t rows, int64_t k, const int32_t *wq,       \
                     int64_t n, const double *panel) {                                                              \
        enum { NR = NV * (int)(sizeof(VD) / sizeof(double)) };                                                      \
        int64_t whole;                                                                                              \
        if (panel == NULL) {                                                                                        \
            for (int64_t r = 0; r < rows; r++) {                                                                    \
                int64_t j0 = 0;                                                                                     \
                for (; j0 + 4 * NR <= n; j0 += 4 * NR) NAME##_wide(acc + r * acc_s + j0, x + r * k, k, wq + j0, n); \
                for (; j0 + NR <= n; j0 += NR) NAME##_narrow(acc + r * acc_s + j0, x + r * k, k, wq + j0, n);      \
            }                                                                                                       \
            whole = n - n % NR;                                                                                     \
        } else {                                                                                                    \
            whole = n - n % PANEL;                                                                                  \
            for (int64_t r0 = 0; r0 < rows; r0 += MC) {                                                             \
                const int64_t r1 = rows - r0 < MC ? rows : r0 + MC;                                                 \
                for (int64_t j0 = 0; j0 < whole; j0 += NR) {                                                        \
                    const double *p = panel + (j0 / PANEL) * k * PANEL + j0 % PANEL;                                \
                    int64_t r = r0;                                                                                 \
                    for (; r + MR <= r1; r += MR) NAME##_tile(acc + r * acc_s + j0, acc_s, x + r * k, k, p);        \
                    if (MR > 4 && r + 4 <= r1) {                                                                    \
                        NAME##_tile4(acc + r * acc_s + j0, acc_s, x + r * k, k, p);                                 \
                        r += 4;                                                                                     \
                    }                                                                                               \
                    for (; r + 2 <= r1; r += 2) NAME##_tile2(acc + r * acc_s + j0, acc_s, x + r * k, k, p);         \
                    if (r < r1) NAME##_tile1(acc + r * acc_s + j0, acc_s, x + r * k, k, p);                         \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
        for (int64_t r = 0; r < rows; r++)                                                                          \
            for (int64_t j = whole; j < n; j++) {                                                                   \
                double sum = 0.0;                                                                                   \
                for (int64_t i = 0; i < k; i++) sum += x[r * k + i] * (double)wq[i * n + j];                       \
                acc[r * acc_s + j] = sum;                                                                           \
            }                                                                                                       \
    }

#if X86_VARIANTS
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#pragma GCC target("arch=x86-64-v4", "prefer-vector-width=512")
GEMM(gemm_v4, v8d, v8i, 2, 8)                   /* 8 rows x 16 columns: 16 of the 32 zmm registers hold sums */
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#pragma GCC target("arch=x86-64-v3")
GEMM(gemm_v3, v4d, v4i, 2, 6)                   /* 6 rows x 8 columns: 12 of the 16 ymm registers */
#pragma GCC pop_options
#endif

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
GEMM(gemm_v1, v2d, v2i, 2, 4)                   /* the baseline (SSE2 on x86-64): 4 rows x 4 columns */
#pragma GCC pop_options

typedef struct {
    const char *name;
    void (*gemm)(double *acc, int64_t acc_s, const double *x, int64_t rows, int64_t k, const int32_t *wq, int64_t n,
                 const double *panel);
} Isa;
#if X86_VARIANTS
static const Isa isas[] = {{"avx512", gemm_v4}, {"avx2", gemm_v3}, {"sse2", gemm_v1}};
#else
static const Isa isas[] = {{"baseline", gemm_v1}};
#endif
enum { ISAS = sizeof isas / sizeof isas[0] };
static int isa_best = ISAS - 1;                 /* the best variant this CPU runs (index into isas) */
static const Isa *isa = &isas[ISAS - 1];        /* the variant in use */

static void find_isa(void) {
#if X86_VARIANTS
    __builtin_cpu_init();
    isa_best = __builtin_cpu_supports("x86-64-v4") ? 0 : __builtin_cpu_supports("x86-64-v3") ? 1 : 2;
#else
    isa_best = 0;
#endif
    isa = &isas[isa_best];
}

/* Scratch memory of the calling thread, kept from call to call (a pool worker's for its life) and freed when the
 * thread exits (scratch_key's destructor). */
typedef struct {
    double *at;
    int64_t size;
} Scratch;
static pthread_key_t scratch_key;

static void scratch_free(void *p) {
    Scratch *s = p;
    free(s->at);
    free(s);
}

static double *scratch(int64_t count) {
    Scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (count > s->size) {
        double *p = realloc(s->at, sizeof(double) * (size_t)count);
        if (p == NULL) return NULL;
        s->at = p;
        s->size = count;
    }
    return s->at;
}

/* ----- a call's rows over threads ------------------------------------------------------------------------
 * A kernel whose rows are independent (each image's windows, rounding blocks, sums and table lookups its own)
 * gives the same bits however its rows are split: split_rows runs fn over rows [0, rows) in `threads` contiguous
 * parts, the first in the calling thread and the others in the workers of a pool started on first use and kept
 * (starting a thread per call costs more than a step of a small batch). One call uses the pool at a time; another
 * thread's call meanwhile, or a part without a worker, runs in its caller. A child process after fork starts its own
 * workers. Its status: -2 (out of memory) if a part says so, else the first part's nonzero status, else 0. */
#define MAX_THREADS 64

typedef int (*RowsFn)(const void *ctx, int64_t r0, int64_t r1);
typedef struct {
    RowsFn fn;
    const void *ctx;
    int64_t r0, r1;
    int status;
} RowsPart;

static void run_rows_part(RowsPart *part) { part->status = part->fn(part->ctx, part->r0, part->r1); }

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    RowsPart *parts;        /* the current call's parts for the workers: worker i runs parts[i] if i < jobs */
    int64_t jobs, pending, generation, started;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0};
static pthread_mutex_t pool_user = PTHREAD_MUTEX_INITIALIZER;

/* Waiting threads poll for SPIN_NS before they sleep: waking a sleeping thread costs 50-70 us on a 2-core VM, as much
 * as a small call's work, while a coder's calls come a fraction of a millisecond apart. */
#define SPIN_NS 500000

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Polls *v for up to SPIN_NS until it is (equal) or is not (!equal) `value`; whether it got there. */
static int spin(const int64_t *v, int64_t value, int equal) {
    const int64_t end = now_ns() + SPIN_NS;
    for (int64_t i = 1;; i++) {
        if ((__atomic_load_n(v, __ATOMIC_ACQUIRE) == value) == equal) return 1;
        cpu_relax();
        if (i % 256 == 0 && now_ns() > end) return 0;
    }
}

static void *pool_worker(void *arg) {
    const int64_t index = (int64_t)(intptr_t)arg;
    pthread_mutex_lock(&pool.lock);
    int64_t seen = -1;                           /* started for the current call: its part is waiting */
    for (;;) {
        while (pool.generation == seen) {
            pthread_mutex_unlock(&pool.lock);
            const int moved = spin(&pool.generation, seen, 0);
            pthread_mutex_lock(&pool.lock);
            if (!moved && pool.generation == seen) pthread_cond_wait(&pool.work, &pool.lock);
        }
        seen = pool.generation;
        if (index >= pool.jobs) continue;
        RowsPart *part = &pool.parts[index];
        pthread_mutex_unlock(&pool.lock);
        run_rows_part(part);
        pthread_mutex_lock(&pool.lock);
        __atomic_store_n(&pool.pending, pool.pending - 1, __ATOMIC_RELEASE);
        if (pool.pending == 0) pthread_cond_signal(&pool.done);
    }
    return NULL;
}

static void pool_after_fork(void) {              /* the child has no workers: forget them, and any lock held */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool_user, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.parts = NULL;
    pool.jobs = pool.pending = pool.generation = pool.started = 0;
}

/* Workers for `wanted` parts besides the caller's, started as needed (under pool.lock); how many there are. */
static int64_t pool_workers(int64_t wanted) {
    while (pool.started < wanted) {
        pthread_t id;
        if (pthread_create(&id, NULL, pool_worker, (void *)(intptr_t)pool.started) != 0) break;
        pthread_detach(id);
        pool.started++;
    }
    return pool.started < wanted ? pool.started : wanted;
}

static int split_rows(RowsFn fn, const void *ctx, int64_t rows, int64_t threads) {
    threads = threads > rows ? rows : threads;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    RowsPart parts[MAX_THREADS];
    for (int64_t t = 0; t < threads; t++)
        parts[t] = (RowsPart){fn, ctx, rows * t / threads, rows * (t + 1) / threads, 0};
    int64_t workers = 0;
    const int using_pool = threads > 1 && pthread_mutex_trylock(&pool_user) == 0;
    if (using_pool) {
        pthread_mutex_lock(&pool.lock);
        workers = pool_workers(threads - 1);
        pool.parts = parts + 1;
        pool.jobs = workers;
        __atomic_store_n(&pool.pending, workers, __ATOMIC_RELEASE);
        __atomic_store_n(&pool.generation, pool.generation + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&pool.work);
        pthread_mutex_unlock(&pool.lock);
    }
    run_rows_part(&parts[0]);
    for (int64_t t = 1 + workers; t < threads; t++) run_rows_part(&parts[t]);
    if (using_pool) {
        spin(&pool.pending, 0, 1);
        pthread_mutex_lock(&pool.lock);
        while (pool.pending) pthread_cond_wait(&pool.done, &pool.lock);
        pool.jobs = 0;
        pthread_mutex_unlock(&pool.lock);
        pthread_mutex_unlock(&pool_user);
    }
    int status = 0;
    for (int64_t t = 0; t < threads; t++)
        if (parts[t].status == -2 || (parts[t].status && !status)) status = parts[t].status;
    return status;
}

static int as_ptr(PyObject *o, void **p) {
    if (o == Py_None) { *p = NULL; return 0; }
    *p = PyLong_AsVoidPtr(o);
    return PyErr_Occurred() ? -1 : 0;
}

static int as_int(PyObject *o, int64_t *v) {
    *v = PyLong_AsLongLong(o);
    return PyErr_Occurred() ? -1 : 0;
}

#define ABS_BITS 0x7fffffffffffffffULL
#define INF_BITS 0x7ff0000000000000ULL

/* The block of n values v rounded to `bits` bits: *up = 2**(bits - e), 2**e above their largest magnitude
 * (blocks.to_blocks); -1 where a value is not finite. The peak is taken on the magnitudes' bit patterns, whose order
 * is the values' (and puts inf and NaN above every finite value). */
INLINE int block_of(const double *v, int64_t n, int bits, double *up) {
    uint64_t top = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t b;
        memcpy(&b, v + i, sizeof b);
        b &= ABS_BITS;
        top = b > top ? b : top;
    }
    if (top >= INF_BITS) return -1;
    double peak;
    memcpy(&peak, &top, sizeof peak);
    return block_up(peak, bits, up);
}

/* One window (R x Cc x C values, strides sr, sc, 1), ReLU'd if flags & RELU_IN, rounded to one block of `bits`
 * bits into q (K contiguous values): blocks.to_blocks; *xs its scale. -1 where the window is not finite. */
INLINE int round_window(double *q, double *xs, const double *x, int64_t R, int64_t Cc, int64_t C, int64_t sr,
                               int64_t sc, int64_t flags, int bits) {
    const int64_t k = R * Cc * C;
    double *qq = q;
    for (int64_t y = 0; y < R; y++)
        for (int64_t c = 0; c < Cc; c++, qq += C) {
            const double *p = x + y * sr + c * sc;
            if (flags & RELU_IN)
                for (int64_t ch = 0; ch < C; ch++) qq[ch] = relu(p[ch]);
            else
                for (int64_t ch = 0; ch < C; ch++) qq[ch] = p[ch];
        }
    double up;
    if (block_of(q, k, bits, &up)) return -1;
    for (int64_t i = 0; i < k; i++) q[i] = (q[i] * up + ROUNDER) - ROUNDER;
    *xs = 1.0 / up;                                                /* exact: a power of two */
    return 0;
}

/* One row's output from its exact sums acc (o may be acc): relu?(residual + (bias + (acc * xs) * ws)), the order
 * in which blocks.addmm / matmul and the steppers round them. */
INLINE void finish_row(double *o, const double *acc, int64_t n, double xs, const double *ws, const double *bias,
                              const double *res, int64_t flags) {
    if (bias && res)
        for (int64_t j = 0; j < n; j++) o[j] = res[j] + (bias[j] + (acc[j] * xs) * ws[j]);
    else if (bias)
        for (int64_t j = 0; j < n; j++) o[j] = bias[j] + (acc[j] * xs) * ws[j];
    else if (res)
        for (int64_t j = 0; j < n; j++) o[j] = res[j] + (acc[j] * xs) * ws[j];
    else
        for (int64_t j = 0; j < n; j++) o[j] = (acc[j] * xs) * ws[j];
    if (flags & RELU_OUT)
        for (int64_t j = 0; j < n; j++) o[j] = relu(o[j]);
}

/* An affine map of windows, rows r0 .. r1 of a call: row r = w B + b (w < outer, b < B) reads the window at
 * x + w x_sw + b x_sb (R x Cc x C values, strides x_sr, x_sc, 1, in that order: a ConvTaps window), ReLU'd if
 * flags & RELU_IN, rounded to one block of `bits` bits (blocks.to_blocks); its exact product with the (K, n) weight
 * wq (rounded per column: its integers as int32, its scales ws); then
 *     out[r] = relu?( residual[r] + (bias[r] + (acc * xs) * ws) )
 * the order in which blocks.addmm / matmul and the steppers round them (bias, residual may be NULL; a stride of 0
 * broadcasts a bias over the rows). */
typedef struct {
    double *out;
    int64_t out_sb;
    const double *x;
    int64_t B, x_sw, x_sb, R, Cc, C, x_sr, x_sc;
    const int32_t *wq;
    const double *panels, *ws;                /* panels: wq's (pack_panels), or NULL: made per call */
    int64_t n;
    const double *bias;
    int64_t bias_sb;
    const double *res;
    int64_t res_sb, flags, bits;
} AffineCall;

/* An AffineCall's rows r0 .. r1: 0, -1 where a window held inf or NaN (nothing trusted), -2 out of memory. Rows are
 * rounded MC at a time into scratch, multiplied, and finished in place in out (which may not overlap x). */
VECTOR static int affine_part(const void *ctx, int64_t r0, int64_t r1) {
    const AffineCall *a = ctx;
    const int64_t k = a->R * a->Cc * a->C, n = a->n;
    const int direct = r1 - r0 < DIRECT_ROWS, made = !direct && a->panels == NULL;
    double *xq = scratch(MC * k + MC + (made ? k * n : 0));
    if (xq == NULL) return -2;
    double *xs = xq + MC * k;
    const double *panels = direct ? NULL : a->panels;
    if (made) {
        pack_panels(xs + MC, a->wq, k, n);
        panels = xs + MC;
    }
    for (int64_t c0 = r0; c0 < r1; c0 += MC) {
        const int64_t rows = r1 - c0 < MC ? r1 - c0 : MC;
        for (int64_t i = 0; i < rows; i++) {
            const int64_t r = c0 + i, w = r / a->B, b = r % a->B;
            if (round_window(xq + i * k, xs + i, a->x + w * a->x_sw + b * a->x_sb, a->R, a->Cc, a->C, a->x_sr, a->x_sc,
                             a->flags, (int)a->bits))
                return -1;
        }
        double *out = a->out + c0 * a->out_sb;
        isa->gemm(out, a->out_sb, xq, rows, k, a->wq, n, panels);
        for (int64_t i = 0; i < rows; i++)
            finish_row(out + i * a->out_sb, out + i * a->out_sb, n, xs[i], a->ws,
                       a->bias ? a->bias + (c0 + i) * a->bias_sb : NULL, a->res ? a->res + (c0 + i) * a->res_sb : NULL,
                       a->flags);
    }
    return 0;
}

/* affine_part over B rows of one window each (outer 1), for the fused steps. */
static int affine_core(double *out, int64_t out_sb, const double *x, int64_t B, int64_t R, int64_t Cc, int64_t C,
                       int64_t x_sb, int64_t x_sr, int64_t x_sc, const int32_t *wq, const double *panels,
                       const double *ws, int64_t n, const double *bias, int64_t bias_sb, const double *res,
                       int64_t res_sb, int64_t flags, int64_t bits) {
    const AffineCall a = {out, out_sb, x, B, 0, x_sb, R, Cc, C, x_sr, x_sc, wq, panels, ws, n, bias, bias_sb, res,
                          res_sb, flags, bits};
    return affine_part(&a, 0, B);
}

/* affine(out, out_sb, x, outer, B, x_sw, x_sb, R, Cc, C, x_sr, x_sc, wq, panels, ws, n, bias, bias_sb, residual,
 * res_sb, flags, bits, threads): an AffineCall over its outer B rows, split over `threads` threads. Returns 0, or -1
 * where a window held inf or NaN. */
static PyObject *affine(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 23) {
        PyErr_SetString(PyExc_TypeError, "affine takes 23 arguments");
        return NULL;
    }
    void *out_p, *x_p, *wq_p, *panels_p, *ws_p, *bias_p, *res_p;
    int64_t out_sb, outer, B, x_sw, x_sb, R, Cc, C, x_sr, x_sc, n, bias_sb, res_sb, flags, bits, threads;
    if (as_ptr(args[0], &out_p) || as_int(args[1], &out_sb) || as_ptr(args[2], &x_p) || as_int(args[3], &outer) ||
        as_int(args[4], &B) || as_int(args[5], &x_sw) || as_int(args[6], &x_sb) || as_int(args[7], &R) ||
        as_int(args[8], &Cc) || as_int(args[9], &C) || as_int(args[10], &x_sr) || as_int(args[11], &x_sc) ||
        as_ptr(args[12], &wq_p) || as_ptr(args[13], &panels_p) || as_ptr(args[14], &ws_p) || as_int(args[15], &n) ||
        as_ptr(args[16], &bias_p) || as_int(args[17], &bias_sb) || as_ptr(args[18], &res_p) ||
        as_int(args[19], &res_sb) || as_int(args[20], &flags) || as_int(args[21], &bits) || as_int(args[22], &threads))
        return NULL;
    AffineCall a = {out_p, out_sb, x_p, B, x_sw, x_sb, R, Cc, C, x_sr, x_sc, wq_p, panels_p, ws_p, n, bias_p, bias_sb,
                    res_p, res_sb, flags, bits};
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (outer * B > 0) status = split_rows(affine_part, &a, outer * B, threads);
    Py_END_ALLOW_THREADS
    if (status == -2) return PyErr_NoMemory();
    return PyLong_FromLong(status);
}

/* pack(panels, wq, k, n): the whole panels of a (k, n) int32 weight as float64 (pack_panels), for a caller that
 * keeps them: (n - n % 16) k doubles. */
static PyObject *pack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "pack takes 4 arguments");
        return NULL;
    }
    void *panels_p, *wq_p;
    int64_t k, n;
    if (as_ptr(args[0], &panels_p) || as_ptr(args[1], &wq_p) || as_int(args[2], &k) || as_int(args[3], &n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    pack_panels(panels_p, wq_p, k, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* elementary.py's tables: set_tables(sigmoid, sigmoid_slopes, exp_frac, exp_frac_slopes, exp_int, recip, log_recip,
 * ln2), pointers to float64 tensors that the caller keeps alive. */
enum { SIG, SIG_SLOPES, EXP_FRAC, EXP_FRAC_SLOPES, EXP_INT, RECIP, LOG_RECIP, LN2, TABLES };
static const double *table[TABLES];

#define EXP_MIN (-708.0)
#define EXP_MAX 709.0
#define EXP_SCALE 4096.0           /* 2**EXP_STEP */

static PyObject *set_tables(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != TABLES) {
        PyErr_SetString(PyExc_TypeError, "set_tables takes 8 pointers");
        return NULL;
    }
    for (int i = 0; i < TABLES; i++)
        if (as_ptr(args[i], (void **)&table[i])) return NULL;
    Py_RETURN_NONE;
}

/* _interpolate: table t (slopes s) at u >= 0, in units of its step. */
INLINE double interpolate(const double *restrict t, const double *restrict s, double u) {
    double i = floor(u);
    double frac = u - i;
    int at = (int)i;                                               /* every table has fewer than 2**31 entries */
    return t[at] + s[at] * frac;
}

/* elementary.sigmoid with its table t, s: NaN as 0, clamped to [-32, 32], the table interpolated. */
INLINE double sigmoid_of(double x, const double *restrict t, const double *restrict s) {
    if (x != x) x = 0.0;
    x = x < -SIGMOID_RANGE ? -SIGMOID_RANGE : x;
    x = x > SIGMOID_RANGE ? SIGMOID_RANGE : x;
    return interpolate(t, s, (x + SIGMOID_RANGE) * SIGMOID_SCALE);
}

/* elementary.tanh: 2 sigmoid(2x) - 1. */
INLINE double tanh_of(double x, const double *restrict t, const double *restrict s) {
    return sigmoid_of(x * 2.0, t, s) * 2.0 - 1.0;
}


/* elementary.exp with its tables: e**n e**f, n = floor(x); 0 below EXP_MIN, inf above EXP_MAX + 0.5, NaN as 0. */
INLINE double exp_of(double x, const double *restrict frac, const double *restrict frac_slopes,
                            const double *restrict whole) {
    double xc = x;
    if (xc != xc) xc = 0.0;
    xc = xc < EXP_MIN ? EXP_MIN : xc;
    xc = xc > EXP_MAX + 0.5 ? EXP_MAX + 0.5 : xc;
    double n = floor(xc);
    double out = interpolate(frac, frac_slopes, (xc - n) * EXP_SCALE) * whole[(int)(n - EXP_MIN)];
    out = x < EXP_MIN ? 0.0 : out;
    return x > EXP_MAX + 0.5 ? INFINITY : out;
}

INLINE double exp1(double x) { return exp_of(x, table[EXP_FRAC], table[EXP_FRAC_SLOPES], table[EXP_INT]); }

/* elementary.expm1: the degree-17 Taylor series in Horner form where |x| < 1, else exp(x) - 1. */
INLINE double expm1_1(double x) {
    if (!(fabs(x) < 1.0)) return exp1(x) - 1.0;
    static const double inverse_factorial[18] = {
        1.0, 1.0 / 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0,
        1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0, 1.0 / 6227020800.0,
        1.0 / 87178291200.0, 1.0 / 1307674368000.0, 1.0 / 20922789888000.0, 1.0 / 355687428096000.0};
    double poly = inverse_factorial[17];
    for (int k = 16; k >= 1; k--) poly = poly * x + inverse_factorial[k];
    return poly * x;
}

/* elementary.elu with alpha 1: x where x > 0, else expm1(min(x, 0)). */
INLINE double elu1(double x) { return x > 0.0 ? x : expm1_1(x < 0.0 ? x : 0.0 * x); }

/* elementary._log1p_series: ln(1 + u) for |u| <= 2**-8, 7 terms in Horner form. */
INLINE double log1p_series(double u) {
    double poly = 1.0 / 7.0;
    poly = poly * u + -1.0 / 6.0;
    poly = poly * u + 1.0 / 5.0;
    poly = poly * u + -1.0 / 4.0;
    poly = poly * u + 1.0 / 3.0;
    poly = poly * u + -1.0 / 2.0;
    poly = poly * u + 1.0;
    return poly * u;
}

/* elementary.log: e ln 2 - ln(r_i) + ln(m r_i), x = m 2**e. */
INLINE double log1(double x) {
    if (x == 0.0) return -INFINITY;
    if (x == INFINITY) return INFINITY;
    if (!(x > 0.0)) return NAN;
    int e;
    double m = frexp(x, &e) * 2.0;
    double i = floor((m - 1.0) * 256.0);
    int64_t at = i < 0.0 ? 0 : i > 255.0 ? 255 : (int64_t)i;
    double u = m * table[RECIP][at] - 1.0;
    return ((double)(e - 1) * table[LN2][0] + table[LOG_RECIP][at]) + log1p_series(u);
}

/* One row's gate: out[j] = tanh(x[j]) * sigmoid(x[n + j]), j < n (sigmoid table t, slopes s). A function of its own:
 * its loop vectorizes (table reads gathered) only where out and x are known apart (restrict). */
VECTOR __attribute__((noinline)) static void gate_row(double *restrict out, const double *restrict x, int64_t n,
                                                      const double *restrict t, const double *restrict s) {
    for (int64_t j = 0; j < n; j++) out[j] = tanh_of(x[j], t, s) * sigmoid_of(x[n + j], t, s);
}

VECTOR static void gate_impl(double *restrict out, int64_t out_sb, const double *restrict x, int64_t x_sb, int64_t B,
                             int64_t n) {
    for (int64_t b = 0; b < B; b++) gate_row(out + b * out_sb, x + b * x_sb, n, table[SIG], table[SIG_SLOPES]);
}

/* A Gated PixelCNN layer's step as the plan row of fused.GatedColumn lays it out (int64 fields: pointers, sizes,
 * strides in elements). */
enum {
    CONV_WQ, CONV_PANELS, CONV_WS, CONV_N, CONV_BITS,          /* the horizontal convolution, (K, 2n) */
    WIN, WIN_H, WIN_W, WIN_B, WIN_R, WIN_C, ROWS, COLS, CHANNELS,   /* its windows: base, strides, shape */
    ROW_BIAS, ROW_BIAS_W, ROW_BIAS_B,                         /* the row's bias (W, B, 2n), set at each row start */
    PRE, GATED,                                                /* scratch (B, 2n) and (B, n) */
    OUT_WQ, OUT_PANELS, OUT_WS, OUT_N, OUT_BITS, OUT_BIAS,     /* the 1x1 output map, (n, n) */
    NEXT, NEXT_B, NEXT_H, NEXT_W, NEXT_TOP, NEXT_LEFT,         /* the next layer's cache (NEXT 0: the last layer) */
    LAST, FIRST,                                               /* the last layer's output (B, n); no residual */
    LAYER_FIELDS
};
/* The output head: the hidden map (HID_WQ 0: none) and the map to the parameters. */
enum {
    HID_WQ, HID_PANELS, HID_WS, HID_N, HID_BITS, HID_BIAS, HID_ROWS,
    P_WQ, P_PANELS, P_WS, P_N, P_BITS, P_BIAS, HEAD_FIELDS
};

#define PTR(v) ((void *)(intptr_t)(v))

/* The step of gated_column for the images b0 .. b0 + B of the batch: every row-strided pointer of the plan moved
 * b0 rows on (rows are independent: any split of the batch gives the bits of the whole). 0, -1 where a window was
 * not finite, -2 out of memory. */
static int column_part(const int64_t *plan, int64_t layers, const int64_t *head, int64_t b0, int64_t B, int64_t h,
                       int64_t w, double *params) {
    int status = 0;
    const double *res = NULL;
    int64_t res_sb = 0;
    for (int64_t l = 0; l < layers && !status; l++) {
        const int64_t *p = plan + l * LAYER_FIELDS;
        const int64_t n2 = p[CONV_N], n = p[OUT_N];
        const double *window = (const double *)PTR(p[WIN]) + h * p[WIN_H] + w * p[WIN_W] + b0 * p[WIN_B];
        double *pre = (double *)PTR(p[PRE]) + b0 * n2, *gated = (double *)PTR(p[GATED]) + b0 * n;
        status = affine_core(pre, n2, window, B, p[ROWS], p[COLS], p[CHANNELS], p[WIN_B], p[WIN_R], p[WIN_C],
                             PTR(p[CONV_WQ]), PTR(p[CONV_PANELS]), PTR(p[CONV_WS]), n2,
                             (const double *)PTR(p[ROW_BIAS]) + w * p[ROW_BIAS_W] + b0 * p[ROW_BIAS_B], p[ROW_BIAS_B],
                             NULL, 0, 0, (int)p[CONV_BITS]);
        if (status) break;
        gate_impl(gated, n, pre, n2, B, n);
        double *out = (double *)PTR(p[LAST]) + b0 * n;
        int64_t out_sb = n;
        if (p[NEXT]) {
            out = (double *)PTR(p[NEXT]) + (p[NEXT_TOP] + h) * p[NEXT_H] + (p[NEXT_LEFT] + w) * p[NEXT_W] +
                  b0 * p[NEXT_B];
            out_sb = p[NEXT_B];
        }
        status = affine_core(out, out_sb, gated, B, 1, 1, n, n, 0, 0, PTR(p[OUT_WQ]), PTR(p[OUT_PANELS]),
                             PTR(p[OUT_WS]), n, PTR(p[OUT_BIAS]), 0, p[FIRST] ? NULL : res, res_sb, 0,
                             (int)p[OUT_BITS]);
        res = out;
        res_sb = out_sb;
    }
    if (!status) {
        const double *x = res;
        int64_t x_n = plan[(layers - 1) * LAYER_FIELDS + OUT_N], x_sb = res_sb, flags = RELU_IN;
        if (head[HID_WQ]) {
            double *hidden = (double *)PTR(head[HID_ROWS]) + b0 * head[HID_N];
            status = affine_core(hidden, head[HID_N], x, B, 1, 1, x_n, x_sb, 0, 0, PTR(head[HID_WQ]),
                                 PTR(head[HID_PANELS]), PTR(head[HID_WS]), head[HID_N], PTR(head[HID_BIAS]), 0, NULL,
                                 0, RELU_IN | RELU_OUT, (int)head[HID_BITS]);
            x = hidden;
            x_n = x_sb = head[HID_N];
            flags = 0;
        }
        if (!status)
            status = affine_core(params + b0 * head[P_N], head[P_N], x, B, 1, 1, x_n, x_sb, 0, 0, PTR(head[P_WQ]),
                                 PTR(head[P_PANELS]), PTR(head[P_WS]), head[P_N], PTR(head[P_BIAS]), 0, NULL, 0, flags,
                                 (int)head[P_BITS]);
    }
    return status;
}

typedef struct {
    const int64_t *plan, *head;
    int64_t layers, h, w;
    double *params;
} Column;

static int column_rows(const void *ctx, int64_t r0, int64_t r1) {
    const Column *c = ctx;
    return column_part(c->plan, c->layers, c->head, r0, r1 - r0, c->h, c->w, c->params);
}

/* gated_column(plan, layers, head, batch, h, w, params, threads): fused.GatedColumn's step at (h, w), every layer
 * and the head in one call (the steps of _GatedLayer.step and GatedColumn.__call__, in their order), the batch's
 * images split over `threads` threads. 0, -1 where a window was not finite, -2 out of memory. */
static PyObject *gated_column(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "gated_column takes 8 arguments");
        return NULL;
    }
    void *plan_p, *head_p, *params_p;
    int64_t layers, B, h, w, threads;
    if (as_ptr(args[0], &plan_p) || as_int(args[1], &layers) || as_ptr(args[2], &head_p) || as_int(args[3], &B) ||
        as_int(args[4], &h) || as_int(args[5], &w) || as_ptr(args[6], &params_p) || as_int(args[7], &threads))
        return NULL;
    Column c = {plan_p, head_p, layers, h, w, params_p};
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (B > 0) status = split_rows(column_rows, &c, B, threads);
    Py_END_ALLOW_THREADS
    if (status == -2) return PyErr_NoMemory();
    return PyLong_FromLong(status);
}

/* A Gated PixelCNN layer's row start as the row plan of fused._GatedLayer lays it out (int64 fields: pointers,
 * sizes, strides in elements; a pointer 0 where there is none). For row h >= 1, at each (w, b) of the row: the
 * vertical stack's window of row h - 1 by its affine map (v_pre, 2n), gated with the conditioning bias of row h - 1
 * into the next layer's vertical cache, and the 1x1 link v_to_h of v_pre plus the horizontal bias and the
 * conditioning of row h: the row's bias (W, B, 2n) for the horizontal steps. */
enum {
    V_WIN, V_WIN_H, V_WIN_W, V_WIN_B, V_WIN_R, V_WIN_C, V_ROWS, V_COLS, V_CHANNELS,   /* the vertical windows */
    V_WQ, V_PANELS, V_WS, V_BIAS, V_BITS, V_N,                                       /* its (K, 2n) map */
    V_EXTRA, V_EXTRA_H, V_EXTRA_W, V_EXTRA_B,                                        /* conditioning before the gate */
    V_NEXT, V_NEXT_H, V_NEXT_W, V_NEXT_B,                                            /* the next vertical cache */
    T_WQ, T_PANELS, T_WS, T_BIAS, T_BITS,                                            /* v_to_h, (2n, 2n) */
    H_BIAS, H_EXTRA, H_EXTRA_H, H_EXTRA_W, H_EXTRA_B,                                /* the horizontal biases */
    ROW_OUT, WIDTH, BATCH, ROW_FIELDS
};

typedef struct {
    const int64_t *p;
    int64_t h;
} RowStart;

/* Rows r0 .. r1 (r = w B + b) of a row start, MC at a time: the vertical windows rounded and multiplied, finished
 * (v_pre), gated into the next cache, rounded again and multiplied by v_to_h, finished into the row's bias. */
VECTOR static int row_start_part(const void *ctx, int64_t r0, int64_t r1) {
    const RowStart *c = ctx;
    const int64_t *p = c->p, h = c->h, B = p[BATCH], n2 = p[V_N], n = n2 / 2;
    const int64_t kv = p[V_ROWS] * p[V_COLS] * p[V_CHANNELS];
    const int64_t kq = kv > n2 ? kv : n2;              /* xq holds the vertical windows, then the v_pre rows */
    const int made_v = p[V_PANELS] == 0, made_t = p[T_PANELS] == 0;
    double *xq = scratch(MC * kq + MC * n2 + MC + n2 + (made_v ? kv * n2 : 0) + (made_t ? n2 * n2 : 0));
    if (xq == NULL) return -2;
    double *pre = xq + MC * kq, *xs = pre + MC * n2, *g = xs + MC, *made = g + n2;
    const double *panel_v = PTR(p[V_PANELS]), *panel_t = PTR(p[T_PANELS]);
    if (made_v) {
        pack_panels(made, PTR(p[V_WQ]), kv, n2);
        panel_v = made;
        made += kv * n2;
    }
    if (made_t) {
        pack_panels(made, PTR(p[T_WQ]), n2, n2);
        panel_t = made;
    }
    const double *v_win = (const double *)PTR(p[V_WIN]) + (h - 1) * p[V_WIN_H];
    const double *v_ws = PTR(p[V_WS]), *v_bias = PTR(p[V_BIAS]), *t_ws = PTR(p[T_WS]), *t_bias = PTR(p[T_BIAS]);
    const double *h_bias = PTR(p[H_BIAS]);
    const double *v_extra = p[V_EXTRA] ? (const double *)PTR(p[V_EXTRA]) + (h - 1) * p[V_EXTRA_H] : NULL;
    const double *h_extra = p[H_EXTRA] ? (const double *)PTR(p[H_EXTRA]) + h * p[H_EXTRA_H] : NULL;
    double *v_next = p[V_NEXT] ? (double *)PTR(p[V_NEXT]) + (h - 1) * p[V_NEXT_H] : NULL;
    const double *restrict sig = table[SIG], *restrict sig_s = table[SIG_SLOPES];
    for (int64_t c0 = r0; c0 < r1; c0 += MC) {
        const int64_t rows = r1 - c0 < MC ? r1 - c0 : MC;
        for (int64_t i = 0; i < rows; i++) {
            const int64_t w = (c0 + i) / B, b = (c0 + i) % B;
            if (round_window(xq + i * kv, xs + i, v_win + w * p[V_WIN_W] + b * p[V_WIN_B], p[V_ROWS], p[V_COLS],
                             p[V_CHANNELS], p[V_WIN_R], p[V_WIN_C], 0, (int)p[V_BITS]))
                return -1;
        }
        isa->gemm(pre, n2, xq, rows, kv, PTR(p[V_WQ]), n2, panel_v);
        for (int64_t i = 0; i < rows; i++) {
            const int64_t w = (c0 + i) / B, b = (c0 + i) % B;
            double *v = pre + i * n2;
            finish_row(v, v, n2, xs[i], v_ws, v_bias, NULL, 0);
            if (v_next) {
                const double *x = v;
                if (v_extra) {
                    const double *e = v_extra + w * p[V_EXTRA_W] + b * p[V_EXTRA_B];
                    for (int64_t j = 0; j < n2; j++) g[j] = v[j] + e[j];
                    x = g;
                }
                gate_row(v_next + w * p[V_NEXT_W] + b * p[V_NEXT_B], x, n, sig, sig_s);
            }
            if (round_window(xq + i * n2, xs + i, v, 1, 1, n2, 0, 0, 0, (int)p[T_BITS])) return -1;
        }
        double *out = (double *)PTR(p[ROW_OUT]) + c0 * n2;
        isa->gemm(out, n2, xq, rows, n2, PTR(p[T_WQ]), n2, panel_t);
        for (int64_t i = 0; i < rows; i++) {
            const int64_t w = (c0 + i) / B, b = (c0 + i) % B;
            double *o = out + i * n2;
            finish_row(o, o, n2, xs[i], t_ws, t_bias, NULL, 0);
            for (int64_t j = 0; j < n2; j++) o[j] = o[j] + h_bias[j];
            if (h_extra) {
                const double *e = h_extra + w * p[H_EXTRA_W] + b * p[H_EXTRA_B];
                for (int64_t j = 0; j < n2; j++) o[j] = o[j] + e[j];
            }
        }
    }
    return 0;
}

/* gated_row(plan, h, threads): the row start of row h >= 1 of the layer whose row plan is at `plan`, its W B rows
 * split over `threads` threads. 0, -1 where a window was not finite, -2 out of memory. */
static PyObject *gated_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "gated_row takes 3 arguments");
        return NULL;
    }
    void *plan_p;
    int64_t h, threads;
    if (as_ptr(args[0], &plan_p) || as_int(args[1], &h) || as_int(args[2], &threads)) return NULL;
    if (h < 1) {
        PyErr_SetString(PyExc_ValueError, "gated_row starts rows 1 and on: row 0 reads no row above");
        return NULL;
    }
    const int64_t *p = plan_p;
    RowStart c = {p, h};
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (p[WIDTH] * p[BATCH] > 0) status = split_rows(row_start_part, &c, p[WIDTH] * p[BATCH], threads);
    Py_END_ALLOW_THREADS
    if (status == -2) return PyErr_NoMemory();
    return PyLong_FromLong(status);
}

enum { SIGMOID, TANH, EXP, EXPM1, ELU };

VECTOR static void elementwise_impl(double *restrict out, const double *restrict x, int64_t count, int64_t which) {
    const double *restrict t = table[SIG], *restrict s = table[SIG_SLOPES];
    switch (which) {
    case SIGMOID: for (int64_t i = 0; i < count; i++) out[i] = sigmoid_of(x[i], t, s); break;
    case TANH: for (int64_t i = 0; i < count; i++) out[i] = tanh_of(x[i], t, s); break;
    case EXP:
        for (int64_t i = 0; i < count; i++)
            out[i] = exp_of(x[i], table[EXP_FRAC], table[EXP_FRAC_SLOPES], table[EXP_INT]);
        break;
    case EXPM1: for (int64_t i = 0; i < count; i++) out[i] = expm1_1(x[i]); break;
    default: for (int64_t i = 0; i < count; i++) out[i] = elu1(x[i]); break;
    }
}

/* elementwise(out, x, count, which): one of SIGMOID, TANH, EXP, EXPM1, ELU over contiguous values. */
static PyObject *elementwise(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "elementwise takes 4 arguments");
        return NULL;
    }
    void *out_p, *x_p;
    int64_t count, which;
    if (as_ptr(args[0], &out_p) || as_ptr(args[1], &x_p) || as_int(args[2], &count) || as_int(args[3], &which))
        return NULL;
    if (which < SIGMOID || which > ELU) {
        PyErr_SetString(PyExc_ValueError, "unknown elementwise function");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    elementwise_impl(out_p, x_p, count, which);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

#define SIDE_LANES 8            /* the reductions below keep this many running results side by side */

/* The sum of the n values v[i] up rounded to integers (exact in any order: |sum| < 2**52), in SIDE_LANES running
 * sums (a loop that vectorizes), then the lanes. */
VECTOR __attribute__((noinline)) static double rounded_sum(const double *restrict v, int64_t n, double up) {
    double part[SIDE_LANES] = {0.0};
    int64_t i = 0;
    for (; i + SIDE_LANES <= n; i += SIDE_LANES)
        for (int l = 0; l < SIDE_LANES; l++) part[l] += (v[i + l] * up + ROUNDER) - ROUNDER;
    double total = 0.0;
    for (int l = 0; l < SIDE_LANES; l++) total += part[l];
    for (; i < n; i++) total += (v[i] * up + ROUNDER) - ROUNDER;
    return total;
}

/* The largest of n values (NaN never larger; of equal zeros either, as the reference's amax, whose kernel decides: the
 * shift's sign then reaches no quantized weight) and whether one is NaN: SIDE_LANES running maxima, then the lanes. */
VECTOR __attribute__((noinline)) static double row_max(const double *restrict x, int64_t n, int *nan) {
    double top[SIDE_LANES];
    int64_t bad[SIDE_LANES] = {0};
    for (int l = 0; l < SIDE_LANES; l++) top[l] = -INFINITY;
    int64_t i = 0;
    for (; i + SIDE_LANES <= n; i += SIDE_LANES)
        for (int l = 0; l < SIDE_LANES; l++) {
            top[l] = x[i + l] > top[l] ? x[i + l] : top[l];
            bad[l] |= x[i + l] != x[i + l];
        }
    double best = -INFINITY;
    int any = 0;
    for (int l = 0; l < SIDE_LANES; l++) {
        best = top[l] > best ? top[l] : best;
        any |= bad[l] != 0;
    }
    for (; i < n; i++) {
        best = x[i] > best ? x[i] : best;
        any |= x[i] != x[i];
    }
    *nan = any;
    return best;
}

/* blocks.exact_sum of n values: rounded to one block of 52 - bitlength(max(1, n - 1)) bits, summed exactly.
 * -1 where a value is not finite. */
INLINE int exact_sum(const double *v, int64_t n, double *sum) {
    int64_t m = n - 1 > 1 ? n - 1 : 1;
    int length = 0;
    while (m) { length++; m >>= 1; }
    double up;
    if (block_of(v, n, 52 - length, &up)) return -1;
    *sum = rounded_sum(v, n, up) * (1.0 / up);
    return 0;
}

/* One row's softmax (elementary.softmax) into o: the shifted values' exponentials over their exact sum; *shift the
 * shift (the row's maximum, or 0 where it has none that is finite), *sum the sum. -1 where that sum is not finite;
 * -2 where the row holds NaN and nan_fails. */
/* o[i] = exp(x[i] - top), i < n: a function of its own, whose loop vectorizes (see gate_row). */
VECTOR __attribute__((noinline)) static void exp_row(double *restrict o, const double *restrict x, int64_t n,
                                                     double top, const double *restrict frac,
                                                     const double *restrict frac_slopes, const double *restrict whole) {
    for (int64_t i = 0; i < n; i++) o[i] = exp_of(x[i] - top, frac, frac_slopes, whole);
}

INLINE int softmax_row(double *restrict o, const double *restrict x, int64_t n, int nan_fails, double *shift,
                              double *sum) {
    const double *restrict frac = table[EXP_FRAC], *restrict frac_slopes = table[EXP_FRAC_SLOPES];
    const double *restrict whole = table[EXP_INT];
    int nan;
    double top = row_max(x, n, &nan);
    if (nan && nan_fails) return -2;
    if (nan || !isfinite(top)) top = 0.0;                              /* _shifted: no finite maximum -> 0 */
    exp_row(o, x, n, top, frac, frac_slopes, whole);
    *shift = top;
    return exact_sum(o, n, sum);
}

VECTOR static int rows_softmax_impl(double *out, const double *x, int64_t rows, int64_t n, int64_t take_log) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n;
        double *o = out + r * n;
        double top, sum;
        if (softmax_row(o, xr, n, 0, &top, &sum)) return -1;
        if (take_log) {
            double ls = log1(sum);
            for (int64_t i = 0; i < n; i++) o[i] = (xr[i] - top) - ls;
        } else {
            for (int64_t i = 0; i < n; i++) o[i] = o[i] / sum;
        }
    }
    return 0;
}

/* A row's probabilities o / sum quantized in place: excess = floor(p free), plus what flooring dropped on the first
 * most likely symbol (argmax's). -1 where a probability is not finite. SIDE_LANES of each running result side by side
 * (loops that vectorize), then the lanes: the sums are of integers below 2**24, exact in any order; of the lanes'
 * first largest, the largest, the first of equals. */
VECTOR __attribute__((noinline)) static int quantize_row(double *restrict o, int64_t n, double sum, double free) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        o[i] = o[i] / sum;
        bad |= !(fabs(o[i]) < INFINITY);
    }
    if (bad) return -1;
    double top[SIDE_LANES], part[SIDE_LANES] = {0.0};
    int64_t at[SIDE_LANES] = {0};
    for (int l = 0; l < SIDE_LANES; l++) top[l] = -INFINITY;
    int64_t i = 0;
    for (; i + SIDE_LANES <= n; i += SIDE_LANES)
        for (int l = 0; l < SIDE_LANES; l++) {
            const int larger = o[i + l] > top[l];
            top[l] = larger ? o[i + l] : top[l];
            at[l] = larger ? i + l : at[l];
        }
    double best_p = -INFINITY;
    int64_t best = 0;
    for (int l = 0; l < SIDE_LANES; l++)
        if (top[l] > best_p || (top[l] == best_p && at[l] < best)) {
            best_p = top[l];
            best = at[l];
        }
    for (; i < n; i++)
        if (o[i] > best_p) {
            best_p = o[i];
            best = i;
        }
    for (i = 0; i + SIDE_LANES <= n; i += SIDE_LANES)
        for (int l = 0; l < SIDE_LANES; l++) {
            o[i + l] = floor(o[i + l] * free);
            part[l] += o[i + l];
        }
    double total = 0.0;
    for (int l = 0; l < SIDE_LANES; l++) total += part[l];
    for (; i < n; i++) {
        o[i] = floor(o[i] * free);
        total += o[i];
    }
    o[best] += free - total;
    return 0;
}

VECTOR static int quantize_impl(double *out, const double *x, int64_t rows, int64_t n, double free) {
    for (int64_t r = 0; r < rows; r++) {
        double *o = out + r * n;
        double top, sum;
        if (softmax_row(o, x + r * n, n, 1, &top, &sum) || quantize_row(o, n, sum, free)) return -1;
    }
    return 0;
}

enum { SOFTMAX, LOG_SOFTMAX, QUANTIZE };

typedef struct {
    double *out;
    const double *x;
    int64_t n, mode;
    double free;
} SoftmaxCall;

static int softmax_part(const void *ctx, int64_t r0, int64_t r1) {
    const SoftmaxCall *c = ctx;
    double *out = c->out + r0 * c->n;
    const double *x = c->x + r0 * c->n;
    return c->mode == QUANTIZE ? quantize_impl(out, x, r1 - r0, c->n, c->free)
                               : rows_softmax_impl(out, x, r1 - r0, c->n, c->mode == LOG_SOFTMAX);
}

/* rows_softmax(out, x, rows, n, mode, free, threads) over contiguous rows of n values, split over `threads` threads:
 * elementary.softmax (mode SOFTMAX), elementary.log_softmax (LOG_SOFTMAX), or quantize.quantized_weights with
 * elementary.py's softmax (QUANTIZE: excess = floor(p free), the row's first most likely symbol given what flooring
 * dropped). Returns -1 (the caller computes the reference, which raises where it must) where a row's exponentials were
 * not finite, or for QUANTIZE where a log-probability is NaN or a probability is not finite. */
static PyObject *rows_softmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "rows_softmax takes 7 arguments");
        return NULL;
    }
    void *out_p, *x_p;
    int64_t rows, n, mode, threads;
    double free = PyFloat_AsDouble(args[5]);
    if (as_ptr(args[0], &out_p) || as_ptr(args[1], &x_p) || as_int(args[2], &rows) || as_int(args[3], &n) ||
        as_int(args[4], &mode) || PyErr_Occurred() || as_int(args[6], &threads))
        return NULL;
    SoftmaxCall c = {out_p, x_p, n, mode, free};
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (rows > 0) status = split_rows(softmax_part, &c, rows, threads);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(status);
}

/* isas(): the names of the product's variants this CPU runs, best first; isa(): the one in use; set_isa(name). */
static PyObject *isa_names(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(0);
    for (int i = isa_best; names != NULL && i < ISAS; i++) {
        PyObject *name = PyUnicode_FromString(isas[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

static PyObject *isa_name(PyObject *self, PyObject *unused) { return PyUnicode_FromString(isa->name); }

static PyObject *set_isa(PyObject *self, PyObject *name) {
    const char *wanted = PyUnicode_AsUTF8(name);
    if (wanted == NULL) return NULL;
    for (int i = isa_best; i < ISAS; i++)
        if (strcmp(isas[i].name, wanted) == 0) {
            isa = &isas[i];
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "expected a product variant this CPU runs (%s first), got %R", isas[isa_best].name,
                 name);
    return NULL;
}

static PyMethodDef methods[] = {
    {"affine", (PyCFunction)(void (*)(void))affine, METH_FASTCALL, "exact affine map of strided windows"},
    {"pack", (PyCFunction)(void (*)(void))pack, METH_FASTCALL, "a weight's panels for the exact product"},
    {"gated_column", (PyCFunction)(void (*)(void))gated_column, METH_FASTCALL, "a Gated PixelCNN column, fused"},
    {"gated_row", (PyCFunction)(void (*)(void))gated_row, METH_FASTCALL, "a Gated PixelCNN layer's row start, fused"},
    {"isas", (PyCFunction)(void (*)(void))isa_names, METH_NOARGS, "the product's variants this CPU runs, best first"},
    {"isa", (PyCFunction)(void (*)(void))isa_name, METH_NOARGS, "the product's variant in use"},
    {"set_isa", (PyCFunction)(void (*)(void))set_isa, METH_O, "use another variant of the product"},
    {"elementwise", (PyCFunction)(void (*)(void))elementwise, METH_FASTCALL, "exact sigmoid, tanh, exp, expm1, elu"},
    {"rows_softmax", (PyCFunction)(void (*)(void))rows_softmax, METH_FASTCALL,
     "exact softmax, log_softmax, quantized weights"},
    {"set_tables", (PyCFunction)(void (*)(void))set_tables, METH_FASTCALL, "elementary.py's tables"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "The codec's exact arithmetic, compiled.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    find_isa();
    if (pthread_atfork(NULL, NULL, pool_after_fork) != 0 || pthread_key_create(&scratch_key, scratch_free) != 0)
        return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "VERSION", KERNELS_VERSION) < 0 ||
                      PyModule_AddIntConstant(m, "PANEL", PANEL) < 0 ||
                      PyModule_AddIntConstant(m, "LAYER_FIELDS", LAYER_FIELDS) < 0 ||
                      PyModule_AddIntConstant(m, "HEAD_FIELDS", HEAD_FIELDS) < 0 ||
                      PyModule_AddIntConstant(m, "ROW_FIELDS", ROW_FIELDS) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
