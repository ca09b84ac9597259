/* cuemu.cc: a CPU emulation of the CUDA runtime and cuBLAS subset that
 * kernels/cuda/ uses (headers in tests/cuemu/include/; docs/CUDA.md, "CPU
 * emulation"). It runs the unchanged .cu files so that their logic can be
 * tested on machines without a GPU, and it is strict where the GPU would be
 * strict or silently wrong:
 *
 *  - Kernels: blocks run one after another; each CUDA thread of a block is a
 *    fiber. __syncthreads is a barrier over the block's live threads; a warp
 *    shuffle is a barrier over the lanes of its mask and aborts (with the
 *    kernel, block and lane) when a lane of the mask has exited, waits at
 *    __syncthreads or at another shuffle. Launch configurations are checked
 *    (block size, grid limits, dynamic shared memory against 48 KiB or the
 *    kernel's cudaFuncSetAttribute limit, 227 KiB at most).
 *  - Memory: each cudaMalloc is its own allocation (so -fsanitize=address
 *    catches a kernel's out-of-bounds access), filled with 0xFF bytes (NaN in
 *    fp32 and bf16) as is every block's shared memory, so reading what was
 *    never written shows. Copies, memsets and cuBLAS operands must lie inside
 *    one allocation of the right kind, or the program aborts with a message.
 *  - Streams are lazy: an operation runs only when something waits for it
 *    (cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree, a copy into
 *    pageable memory...), in an order the CUDA rules allow: in stream order,
 *    the legacy stream ordered with blocking streams, non-blocking streams
 *    ordered with nothing. So host code that reads results without waiting,
 *    or that relies on an order the rules do not give, sees stale (0xFF)
 *    data. Waiting on a stream while an unordered stream still holds earlier
 *    work prints a note. CUEMU_SYNC=1 runs every operation at once instead.
 *  - Graphs: operations issued to a capturing stream are recorded (kernel
 *    arguments and cuBLAS scalars by value, copies by pointer) and replayed
 *    by cudaGraphLaunch. Synchronising a capturing stream or copying pageable
 *    memory into the capture invalidates it.
 *  - One device, sm_90, 132 SMs, 80 GiB (an H100 SXM). CUEMU_DEVICES=0:
 *    cudaGetDeviceCount reports no device; CUEMU_DEVICES=N, N alike, each
 *    with its own UUID; CUDA_VISIBLE_DEVICES selects among them as in CUDA.
 *  - cp.async copies (cuemu_cp_async16) land as late as the rules allow: at
 *    the cp.async.wait_group that makes their group complete, not at issue
 *    and not at __syncthreads, so a kernel that reads a stage before waiting
 *    for its copies reads the stage's old contents; a thread that exits with
 *    copies in flight aborts. CUEMU_CP_ASYNC=now lands them at issue instead
 *    (a stage overwritten while other threads still read it shows then).
 *  - Programmatic dependent launch: a grid launched with programmatic stream
 *    serialization right after another kernel on its stream may run its early
 *    part while that kernel still runs, so until its threads' wait
 *    (cudaGridDependencySynchronize) it must not touch what the kernel wrote,
 *    nor write anything. Device memory is page-aligned here and write-
 *    protected while a grid runs, so the pages each grid writes are known
 *    (the first write to a page faults and is recorded); each block of the
 *    following grid then runs with those pages inaccessible until all its
 *    threads have reached the wait, and any access to them, or any write,
 *    before it aborts naming kernel, block and thread. Page granularity: a
 *    read of an unwritten neighbour on a written page counts too. Off under
 *    AddressSanitizer (which needs its own allocations), or CUEMU_PDL_CHECK=0.
 *  - CUEMU_ORDER=rev runs blocks, warps and lanes in reverse order: a kernel
 *    whose result changes with it depends on an order CUDA does not promise.
 *
 * What it cannot show: races between threads that its fixed order hides
 * (run CUEMU_ORDER=rev), device math (expf, sincosf are glibc's here),
 * nvcc's FMA contraction, cuBLAS' own algorithms and rounding, performance. */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif
/* Fibers switch with a few instructions of assembly on x86-64, with
 * ucontext elsewhere (or with -DCUEMU_UCONTEXT; ~10x slower: a system call
 * per switch). */
#if defined(__x86_64__) && !defined(CUEMU_UCONTEXT)
#define CUEMU_ASM_SWITCH 1
#else
#define CUEMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

uint3 *cuemu_tid_ptr;
uint3 cuemu_bid;
dim3 cuemu_bdim, cuemu_gdim;

namespace {

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuemu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

bool env_is(const char *name, const char *value) {
    const char *e = getenv(name);
    return e && !strcmp(e, value);
}

cudaError_t g_last = cudaSuccess;
cudaError_t err(cudaError_t e) {
    if (e != cudaSuccess) g_last = e;
    return e;
}

const size_t DEVICE_BYTES = (size_t)80 << 30;
const int SMEM_DEFAULT = 48 << 10, SMEM_OPTIN = 232448;

/* ---- memory ----------------------------------------------------------------- */

struct Alloc {
    size_t size;
    bool pinned;   /* cudaMallocHost, else device memory */
};
std::map<uintptr_t, Alloc> g_mem;
size_t g_dev_used;

/* The allocation holding [p, p + n), or NULL (also when it spans two). */
const Alloc *find(const void *p, size_t n, uintptr_t *base = nullptr) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_mem.upper_bound(a);
    if (it == g_mem.begin()) return nullptr;
    --it;
    if (a < it->first || a - it->first > it->second.size || n > it->second.size - (a - it->first)) return nullptr;
    if (base) *base = it->first;
    return &it->second;
}
bool is_device(const void *p, size_t n) {
    const Alloc *a = find(p, n ? n : 1);
    return a && !a->pinned;
}
bool is_pinned(const void *p, size_t n) {
    const Alloc *a = find(p, n ? n : 1);
    return a && a->pinned;
}
/* Any byte of [p, p + n) inside device memory? (a host range must not be) */
bool touches_device(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_mem.upper_bound(a + (n ? n : 1) - 1);
    if (it == g_mem.begin()) return false;
    --it;
    return !it->second.pinned && it->first + it->second.size > a;
}
void need_device(const char *call, const char *what, const void *p, size_t n) {
    if (n && !is_device(p, n))
        fail("%s: %s %p (%zu bytes) is not inside one cudaMalloc allocation", call, what, p, n);
}
void need_host(const char *call, const char *what, const void *p, size_t n) {
    if (n && touches_device(p, n)) fail("%s: %s %p (%zu bytes) is device memory, the copy's kind says host", call, what, p, n);
}

/* ---- streams ------------------------------------------------------------------ */

struct Op {
    uint64_t seq;
    std::function<void()> run;
    std::string what;
    bool grid;   /* a kernel launch */
    bool pdl;    /* ... with programmatic stream serialization */
};

/* page ranges [first, second) */
typedef std::vector<std::pair<uintptr_t, uintptr_t>> Ranges;

}  // namespace

struct CUgraph_st {
    std::vector<Op> ops;
};
struct CUgraphExec_st {
    std::vector<Op> ops;
};
struct CUstream_st {
    unsigned flags;
    std::deque<Op> q;
    CUgraph_st *capture;   /* non-NULL while capturing */
    bool invalidated;      /* the capture broke a rule: EndCapture fails */
    /* the operation run last on the stream was a grid: its name and the pages it wrote */
    bool prev_grid;
    std::string prev_name;
    Ranges prev_dirty;
};

namespace {

CUstream_st g_legacy = {cudaStreamDefault, {}, nullptr, false, false, {}, {}};
CUstream_st *g_running;   /* the stream whose operation runs now */
std::vector<CUstream_st *> g_streams = {&g_legacy};
uint64_t g_seq;
int g_notes;

CUstream_st *S(cudaStream_t s) { return s ? s : &g_legacy; }
bool blocking(const CUstream_st *s) { return !(s->flags & cudaStreamNonBlocking); }
/* Implicit ordering: the legacy stream with every blocking stream (not two
 * blocking streams with each other); non-blocking streams with nothing. */
bool ordered(const CUstream_st *a, const CUstream_st *b) {
    return a == b || ((a == &g_legacy || b == &g_legacy) && blocking(a) && blocking(b));
}
bool known_stream(const CUstream_st *s) {
    for (CUstream_st *x : g_streams)
        if (x == s) return true;
    return false;
}

bool g_track;   /* the grid about to run is followed by a PDL grid: record what it writes */
void device_unprotect();   /* the PDL check's protection off (below) */

/* One operation of stream s (a graph's too); next: the one after it, if
 * issued yet. Anything but a kernel ends the programmatic overlap: a grid
 * after it starts when it is done. */
void run_op(CUstream_st *s, const Op &op, const Op *next) {
    if (!op.grid) {
        s->prev_grid = false;
        s->prev_dirty.clear();
        device_unprotect();   /* copies, memsets, GEMMs write device memory from the host */
    }
    g_running = s;
    g_track = op.grid && next && next->grid && next->pdl;
    op.run();
}

/* Run s's operations issued up to seq `upto`, each after what it is ordered
 * behind: the legacy stream behind earlier work of blocking streams, and
 * blocking streams behind earlier legacy work. */
void drain(CUstream_st *s, uint64_t upto) {
    while (!s->q.empty() && s->q.front().seq <= upto) {
        uint64_t seq = s->q.front().seq;
        for (CUstream_st *o : g_streams)
            if (o != s && ordered(o, s)) drain(o, seq - 1);
        Op op = std::move(s->q.front());
        s->q.pop_front();
        run_op(s, op, s->q.empty() ? nullptr : &s->q.front());
    }
    device_unprotect();   /* the host (MPI, a copy's system call) may write device memory next */
}

/* A host wait for all of s's work: note unordered streams that still hold
 * work issued before it (the waiter may be relying on an order CUDA does not
 * give; if results then come out stale, that is why). */
void wait_stream(CUstream_st *s) {
    if (s->q.empty()) return;
    uint64_t last = s->q.back().seq;
    for (CUstream_st *o : g_streams)
        if (!ordered(o, s) && !o->q.empty() && o->q.front().seq < last && g_notes < 20) {
            g_notes++;
            fprintf(stderr,
                    "cuemu: note: waiting for %s stream %p while %zu operation(s) issued earlier on the %s "
                    "stream %p are pending, with no ordering between the two (first: %s)\n",
                    s == &g_legacy ? "the legacy" : blocking(s) ? "blocking" : "non-blocking", (void *)s,
                    o->q.size(), o == &g_legacy ? "legacy" : blocking(o) ? "blocking" : "non-blocking", (void *)o,
                    o->q.front().what.c_str());
        }
    drain(s, last);
}

void wait_all() {
    for (;;) {   /* issue order across streams: a legal order for everything pending */
        CUstream_st *first = nullptr;
        for (CUstream_st *o : g_streams)
            if (!o->q.empty() && (!first || o->q.front().seq < first->q.front().seq)) first = o;
        if (!first) return;
        drain(first, first->q.front().seq);
    }
}

bool eager() {
    static int e = -1;
    if (e < 0) e = env_is("CUEMU_SYNC", "1");
    return e;
}

/* Queue (or record, while capturing) one operation. */
cudaError_t enqueue(cudaStream_t st, std::function<void()> run, std::string what, bool grid = false,
                    bool pdl = false) {
    CUstream_st *s = S(st);
    if (!known_stream(s)) return err(cudaErrorInvalidResourceHandle);
    Op op{++g_seq, std::move(run), std::move(what), grid, pdl};
    if (s->capture) {
        s->capture->ops.push_back(std::move(op));
        return cudaSuccess;
    }
    s->q.push_back(std::move(op));
    if (eager()) wait_all();
    return cudaSuccess;
}

/* ---- fibers ------------------------------------------------------------------- */

enum { NEW, READY, AT_SYNC, AT_SHFL, AT_PDL, DONE };
enum { MAX_THREADS = 1024, STACK = CUEMU_ASAN ? 256 << 10 : 32 << 10 };

struct Thread {
    void *sp;              /* saved stack pointer while switched out */
#if !CUEMU_ASM_SWITCH
    ucontext_t uc;
#endif
    uint3 idx;
    int state;
    int pos;               /* its place in the current pass over its warp */
    /* the pending shuffle */
    unsigned mask;
    int op, arg, width;
    uint64_t val, out;
    const uint32_t *gather;   /* CUEMU_GATHER: the lane's arg words */
    bool waited;           /* called cudaGridDependencySynchronize (a PDL grid's threads must) */
    /* cp.async copies issued and not yet landed: group = the number of groups
     * the thread had committed when it issued the copy (== committed: the open
     * group, which no wait covers) */
    struct AsyncCopy {
        void *dst;
        const void *src;   /* NULL: 16 zero bytes */
        int group;
    };
    std::vector<AsyncCopy> copies;
    int committed;
    void *fake_stack;      /* AddressSanitizer's bookkeeping across switches */
};

Thread g_th[MAX_THREADS];
Thread *g_cur;
char *g_stacks;            /* MAX_THREADS stacks, each with a guard page below */
#if CUEMU_ASM_SWITCH
void *g_sched_sp;           /* the scheduler's saved stack pointer */
#else
ucontext_t g_sched_uc;
#endif
#if CUEMU_ASAN
const void *g_sched_bottom;   /* the host thread's stack, where the scheduler runs */
size_t g_sched_size;
void *g_sched_fake;
#endif
const std::function<void()> *g_body;

const char *g_kernel;      /* the running grid, for messages */
bool g_pdl;                /* the running grid was launched with programmatic stream serialization */

char *stack_of(int i) { return g_stacks + (size_t)i * STACK; }

/* fail() for the running CUDA thread: "kernel K, block (..), thread (..): what" */
[[noreturn]] __attribute__((format(printf, 1, 2))) void thread_fail(const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fail("kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s", g_kernel, cuemu_bid.x, cuemu_bid.y, cuemu_bid.z,
         g_cur->idx.x, g_cur->idx.y, g_cur->idx.z, what);
}

}  // namespace

#if CUEMU_ASM_SWITCH
/* cuemu_switch(&save, to): push the callee-saved registers on the current
 * stack, store the stack pointer in *save, continue on the stack `to` (saved
 * the same way, or made by ctx_init). The FP control words (MXCSR, x87) are
 * not switched: every fiber runs with the host thread's, and no kernel changes
 * them (saving them tripled the cost of a switch). */
extern "C" void cuemu_switch(void **save, void *to);
asm(".text\n"
    ".globl cuemu_switch\n"
    ".type cuemu_switch,@function\n"
    "cuemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size cuemu_switch, .-cuemu_switch\n");
#endif

namespace {

[[noreturn]] void fiber_main();

/* A fresh context on thread i's stack that starts in fiber_main. */
void ctx_init(int i) {
    /* the tops staggered by 64-byte lines: at equal offsets modulo 4 KiB every
     * fiber's frames would fall into the same L1 sets */
    char *lo = stack_of(i) + 4096, *top = stack_of(i) + STACK - (size_t)(i * 7 % 64) * 64;
#if CUEMU_ASAN
    __asan_unpoison_memory_region(lo, (size_t)(top - lo));
#endif
    (void)lo;
#if CUEMU_ASM_SWITCH
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                          /* fiber_main's return address: never used */
    *--sp = (uint64_t)(uintptr_t)&fiber_main;
    for (int r = 0; r < 6; r++) *--sp = 0;   /* rbp, rbx, r12-r15 */
    g_th[i].sp = sp;
#else
    getcontext(&g_th[i].uc);
    g_th[i].uc.uc_stack.ss_sp = lo;
    g_th[i].uc.uc_stack.ss_size = (size_t)(top - lo);
    g_th[i].uc.uc_link = nullptr;
    makecontext(&g_th[i].uc, (void (*)())fiber_main, 0);
#endif
}

/* Switch from `from` to `to` (NULL: the scheduler). */
void switch_to(Thread *from, Thread *to) {
    g_cur = to;
    if (to) cuemu_tid_ptr = &to->idx;
#if CUEMU_ASAN
    void **fake_save = from ? (from->state == DONE ? nullptr : &from->fake_stack) : &g_sched_fake;
    if (to) __sanitizer_start_switch_fiber(fake_save, stack_of((int)(to - g_th)) + 4096, STACK - 4096);
    else __sanitizer_start_switch_fiber(fake_save, g_sched_bottom, g_sched_size);
#endif
#if CUEMU_ASM_SWITCH
    cuemu_switch(from ? &from->sp : &g_sched_sp, to ? to->sp : g_sched_sp);
#else
    swapcontext(from ? &from->uc : &g_sched_uc, to ? &to->uc : &g_sched_uc);
#endif
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(from ? from->fake_stack : g_sched_fake, nullptr, nullptr);
#endif
}

/* One pass over a warp's lanes runs each lane that can run until it waits
 * or exits; a lane that stops switches straight to the next one (half the
 * switches of going through the scheduler), the last back to the scheduler. */
struct {
    int lo, hi;
    bool rev;
} g_pass;

Thread *next_ready(int pos) {
    for (int p = pos; p < g_pass.hi - g_pass.lo; p++) {
        int i = g_pass.rev ? g_pass.hi - 1 - p : g_pass.lo + p;
        Thread &t = g_th[i];
        if (t.state == NEW) {
            ctx_init(i);
            t.state = READY;
        }
        if (t.state == READY) {
            t.pos = p;
            return &t;
        }
    }
    return nullptr;
}

/* the running thread stops, in `state` (DONE: for good) */
void yield(int state) {
    Thread *t = g_cur;
    t->state = state;
    switch_to(t, next_ready(t->pos + 1));
}

[[noreturn]] void fiber_main() {
#if CUEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    g_cur->waited = false;
    g_cur->copies.clear();
    g_cur->committed = 0;
    (*g_body)();
    if (!g_cur->copies.empty())
        thread_fail("exited with %zu cp.async copies in flight (no cp.async.wait_group covered them)",
                    g_cur->copies.size());
    /* a grid launched to overlap its predecessor must wait for it before
     * touching what it writes; the kernels' rule is that every thread waits */
    if (g_pdl && !g_cur->waited)
        thread_fail("launched with programmatic stream serialization but never called cudaGridDependencySynchronize");
    yield(DONE);
    fail("a finished CUDA thread was resumed");
}

const char *shfl_name(int op) {
    static const char *n[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__syncwarp",
                              "cuemu_warp_gather"};
    return n[op];
}

[[noreturn]] void warp_fail(int op, int lo, int lane, const char *what) {
    fail("kernel %s, block (%u,%u,%u), warp %d: %s: lane %d %s", g_kernel, cuemu_bid.x, cuemu_bid.y, cuemu_bid.z,
         lo / 32, shfl_name(op), lane, what);
}

/* The lanes of warp [lo, hi) wait in a shuffle: check that the mask's lanes
 * all take part in the same one (the same operation, mask and width; the
 * lane argument may differ), and hand out the values. */
void resolve_shuffle(int lo, int hi) {
    int first = -1;
    for (int i = lo; i < hi && first < 0; i++)
        if (g_th[i].state == AT_SHFL) first = i;
    const Thread &f = g_th[first];
    unsigned mask = f.mask;
    int width = f.width, op = f.op;
    if (width < 1 || width > 32 || (width & (width - 1))) warp_fail(op, lo, first - lo, "passes a bad width");
    for (int l = 0; l < 32; l++) {
        bool in = mask >> l & 1u;
        if (lo + l >= hi) {
            if (in) warp_fail(op, lo, l, "is named by the mask, but the block has no such thread");
            continue;
        }
        const Thread &t = g_th[lo + l];
        if (!in) {
            if (t.state == AT_SHFL) warp_fail(op, lo, l, "waits with another mask (cuemu takes one group per warp)");
            continue;
        }
        if (t.state == DONE) warp_fail(op, lo, l, "is named by the mask but has exited");
        if (t.state == AT_SYNC) warp_fail(op, lo, l, "is named by the mask but waits at __syncthreads");
        if (t.op != op || t.mask != mask || t.width != width)
            warp_fail(op, lo, l, "waits in a different shuffle (operation, mask or width differ)");
    }
    if (op == CUEMU_GATHER) {   /* every lane's words into the warp's buffer (two, in turn) */
        static uint32_t buf[MAX_THREADS / 32][2][32 * 8];
        static unsigned turn[MAX_THREADS / 32];
        uint32_t *b = buf[lo / 32][turn[lo / 32]++ & 1u];
        for (int l = 0; l < 32; l++) {
            if (g_th[lo + l].arg < 1 || g_th[lo + l].arg > 8) warp_fail(op, lo, l, "passes 0 or more than 8 words");
            memcpy(b + 8 * l, g_th[lo + l].gather, (size_t)g_th[lo + l].arg * sizeof(uint32_t));
        }
        for (int l = 0; l < 32; l++) {
            g_th[lo + l].out = (uint64_t)(uintptr_t)b;
            g_th[lo + l].state = READY;
        }
        return;
    }
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        Thread &t = g_th[lo + l];
        int seg = l & ~(width - 1), src = l;
        switch (t.op) {
        case CUEMU_SHFL_IDX: src = seg + (t.arg & (width - 1)); break;
        case CUEMU_SHFL_UP: src = l - t.arg >= seg ? l - t.arg : l; break;
        case CUEMU_SHFL_DOWN: src = l + t.arg < seg + width ? l + t.arg : l; break;
        case CUEMU_SHFL_XOR: src = (l ^ t.arg) < seg + width && (l ^ t.arg) >= seg ? l ^ t.arg : l; break;
        default: break;
        }
        if (!(mask >> src & 1u)) warp_fail(op, lo, l, "reads a lane outside the mask (an undefined value)");
        t.out = g_th[lo + src].val;
    }
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1u) g_th[lo + l].state = READY;
}

/* per-block shared memory */
std::vector<std::pair<const void *, void *>> g_shared;
void *g_dyn;
size_t g_dyn_bytes;

void *nan_alloc(size_t n, size_t align) {
    void *p = nullptr;
    if (posix_memalign(&p, align, n ? n : 1)) fail("out of host memory (%zu bytes)", n);
    memset(p, 0xff, n);
    return p;
}

bool reverse_order() {
    static int r = -1;
    if (r < 0) r = env_is("CUEMU_ORDER", "rev");
    return r;
}

/* ---- the PDL check's page tracking ------------------------------------------- */

size_t page_size() {
    static size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}
size_t page_up(size_t n) { return (n + page_size() - 1) & ~(page_size() - 1); }

/* Device memory is made read-only before the first tracked grid of a run of
 * kernels and writable again before anything else (a copy, the host), so a
 * run of N kernels costs one pass over the allocations, not N: between
 * grids only the pages written are made read-only again. */
bool g_protected;           /* device memory read-only (but for pages written since) */
std::vector<uintptr_t> g_written;   /* pages the running grid wrote (first write each) */
const Ranges *g_hidden;     /* pages made inaccessible until the block's threads wait */
std::string g_pred_name;    /* the kernel that wrote them */

void protect(uintptr_t a, size_t n, int prot) {
    if (mprotect((void *)a, n, prot)) fail("mprotect(%p, %zu): %s", (void *)a, n, strerror(errno));
}

void protect_all(int prot) {
    for (auto &m : g_mem)
        if (!m.second.pinned) protect(m.first, page_up(m.second.size ? m.second.size : 1), prot);
}
void device_unprotect() {
    if (!g_protected) return;
    protect_all(PROT_READ | PROT_WRITE);
    g_protected = false;
}

/* before a grid: writes from here on are recorded */
void grid_track_begin() {
    if (!g_protected) {
        protect_all(PROT_READ);
        g_protected = true;
    }
    g_written.clear();
}

/* after it: the pages it wrote, as ranges; read-only again for the next */
Ranges grid_track_end() {
    std::sort(g_written.begin(), g_written.end());
    g_written.erase(std::unique(g_written.begin(), g_written.end()), g_written.end());
    Ranges r;
    for (uintptr_t p : g_written) {
        if (!r.empty() && r.back().second == p) r.back().second += page_size();
        else r.push_back({p, p + page_size()});
    }
    for (auto &x : r) protect(x.first, x.second - x.first, PROT_READ);
    g_written.clear();
    return r;
}

/* a freed allocation's pages may be anyone's next: drop what refers to them */
void forget_written() {
    for (CUstream_st *x : g_streams) {
        x->prev_grid = false;
        x->prev_dirty.clear();
    }
}

void pdl_block_hide(const Ranges &r) {
    for (auto &x : r) protect(x.first, x.second - x.first, PROT_NONE);
    g_hidden = &r;
}
/* the block's threads have all waited (or exited): the hidden pages are
 * readable again, and their writes recorded as any other's */
void pdl_block_release() {
    if (!g_hidden) return;
    for (auto &x : *g_hidden) protect(x.first, x.second - x.first, PROT_READ);
    g_hidden = nullptr;
}

bool in_ranges(const Ranges &r, uintptr_t a) {
    for (auto &x : r)
        if (a >= x.first && a < x.second) return true;
    return false;
}

void on_fault(int sig, siginfo_t *si, void *) {
    uintptr_t a = (uintptr_t)si->si_addr, pg = a & ~(uintptr_t)(page_size() - 1);
    if (g_protected && is_device((const void *)a, 1)) {
        if (g_cur && g_hidden && in_ranges(*g_hidden, a))
            thread_fail("launched with programmatic stream serialization, it touched %p, which the kernel before it "
                        "(%s) wrote, before cudaGridDependencySynchronize",
                        (void *)a, g_pred_name.c_str());
        if (g_cur && g_pdl && !g_cur->waited)
            thread_fail("launched with programmatic stream serialization, it wrote device memory (%p) before "
                        "cudaGridDependencySynchronize",
                        (void *)a);
        g_written.push_back(pg);
        protect(pg, page_size(), PROT_READ | PROT_WRITE);
        return;
    }
    /* not ours (a fiber's stack guard, a wild pointer): the default action */
    signal(sig, SIG_DFL);
}

bool pdl_check() {
    static int r = -1;
    if (r < 0) {
        r = !CUEMU_ASAN && !env_is("CUEMU_PDL_CHECK", "0");
        if (r) {
            static char alt[64 << 10];
            stack_t ss = {};
            ss.ss_sp = alt;
            ss.ss_size = sizeof alt;
            struct sigaction sa = {};
            sa.sa_sigaction = on_fault;
            sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
            sigemptyset(&sa.sa_mask);
            if (sigaltstack(&ss, nullptr) || sigaction(SIGSEGV, &sa, nullptr)) fail("cannot install the fault handler");
        }
    }
    return r;
}

void run_block(int n) {
    bool rev = reverse_order();
    int nw = (n + 31) / 32;
    for (int i = 0; i < n; i++) g_th[i].state = NEW;
    g_dyn = g_dyn_bytes ? nan_alloc(g_dyn_bytes, 16) : nullptr;
    for (;;) {
        for (int wi = 0; wi < nw; wi++) {
            int w = rev ? nw - 1 - wi : wi, lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
            g_pass = {lo, hi, rev};
            for (;;) {   /* run the warp's lanes until each waits or has exited */
                if (Thread *t = next_ready(0)) switch_to(nullptr, t);
                bool shfl = false;
                for (int i = lo; i < hi; i++) shfl |= g_th[i].state == AT_SHFL;
                if (!shfl) break;
                resolve_shuffle(lo, hi);
            }
        }
        /* threads in cudaGridDependencySynchronize go on once none can run
         * (before a barrier's release: the barrier waits for them too) */
        bool pdl_waiting = false;
        for (int i = 0; i < n; i++)
            if (g_th[i].state == AT_PDL) {
                g_th[i].state = READY;
                pdl_waiting = true;
            }
        if (pdl_waiting) {
            pdl_block_release();
            continue;
        }
        bool waiting = false;
        for (int i = 0; i < n; i++)
            if (g_th[i].state == AT_SYNC) {
                g_th[i].state = READY;
                waiting = true;
            }
        if (!waiting) break;
    }
    pdl_block_release();
    for (auto &s : g_shared) free(s.second);
    g_shared.clear();
    free(g_dyn);
    g_dyn = nullptr;
}

void run_grid(const char *name, dim3 grid, dim3 block, size_t smem, bool pdl, const std::function<void()> &body) {
    if (!g_stacks) {
        size_t bytes = (size_t)MAX_THREADS * STACK;
        void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail("cannot map the fibers' stacks");
        g_stacks = (char *)p;
        for (int i = 0; i < MAX_THREADS; i++) mprotect(stack_of(i), 4096, PROT_NONE);   /* overflow guard */
#if CUEMU_ASAN
        pthread_attr_t a;
        void *lo = nullptr;
        if (pthread_getattr_np(pthread_self(), &a) || pthread_attr_getstack(&a, &lo, &g_sched_size))
            fail("cannot find the host thread's stack");
        g_sched_bottom = lo;
        pthread_attr_destroy(&a);
#endif
    }
    int n = (int)(block.x * block.y * block.z);
    for (int i = 0; i < n; i++)
        g_th[i].idx = uint3{(unsigned)i % block.x, (unsigned)i / block.x % block.y, (unsigned)i / (block.x * block.y)};
    g_kernel = name;
    g_pdl = pdl;
    g_body = &body;
    g_dyn_bytes = smem;
    cuemu_bdim = block;
    cuemu_gdim = grid;
    bool rev = reverse_order();
    size_t nb = (size_t)grid.x * grid.y * grid.z;
    CUstream_st *st = g_running;
    bool track = pdl_check() && st && (g_track || pdl);   /* pdl: its own writes before the wait fault too */
    Ranges pred;   /* what the kernel this grid may overlap wrote */
    if (track && pdl && st->prev_grid) {
        pred = st->prev_dirty;
        g_pred_name = st->prev_name;
    }
    if (track) grid_track_begin();
    for (size_t bi = 0; bi < nb; bi++) {
        size_t b = rev ? nb - 1 - bi : bi;
        cuemu_bid = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((size_t)grid.x * grid.y))};
        if (!pred.empty()) pdl_block_hide(pred);
        run_block(n);
    }
    Ranges wrote;
    if (g_protected) wrote = grid_track_end();   /* (an untracked grid's writes are made read-only again too) */
    if (st) {
        st->prev_grid = true;
        st->prev_name = name;
        st->prev_dirty = track ? wrote : Ranges();
    }
    cuemu_tid_ptr = nullptr;
    g_cur = nullptr;
}

std::map<const void *, int> g_smem_limit;   /* cudaFuncAttributeMaxDynamicSharedMemorySize */

}  // namespace

/* ---- device-side entry points ---------------------------------------------- */

void __syncthreads(void) {
    if (!g_cur) fail("__syncthreads outside a kernel");
    yield(AT_SYNC);
}

uint64_t cuemu_shfl(unsigned mask, uint64_t bits, int op, int arg, int width) {
    if (!g_cur) fail("%s outside a kernel", shfl_name(op));
    Thread *t = g_cur;
    t->mask = mask;
    t->op = op;
    t->arg = arg;
    t->width = width;
    t->val = bits;
    yield(AT_SHFL);
    return t->out;
}

const uint32_t *cuemu_warp_gather(const uint32_t *words, int n) {
    if (!g_cur) fail("cuemu_warp_gather outside a kernel");
    Thread *t = g_cur;
    t->mask = 0xffffffffu;
    t->op = CUEMU_GATHER;
    t->arg = n;
    t->width = 32;
    t->gather = words;
    yield(AT_SHFL);
    return (const uint32_t *)(uintptr_t)t->out;
}

void cudaGridDependencySynchronize(void) {
    if (!g_cur) fail("cudaGridDependencySynchronize outside a kernel");
    if (g_cur->waited) return;
    g_cur->waited = true;
    if (g_pdl && pdl_check()) yield(AT_PDL);   /* until the block's threads are all here (run_block) */
}

void cuemu_prefetch_l2(const void *p) {
    if (!g_cur) fail("prefetch outside a kernel");
    if (!is_device(p, 1))
        thread_fail("prefetch of %p, not inside a cudaMalloc allocation", p);
}

/* The project's rule (kernels/cuda/common.h): a kernel lets its successor
 * launch only after its own wait, so a kernel's early part overlaps its
 * predecessor alone, never the one before (which it could if the
 * predecessor let it launch before waiting itself). */
void cudaTriggerProgrammaticLaunchCompletion(void) {
    if (!g_cur) fail("cudaTriggerProgrammaticLaunchCompletion outside a kernel");
    if (g_pdl && !g_cur->waited)
        thread_fail("cudaTriggerProgrammaticLaunchCompletion before cudaGridDependencySynchronize");
}

/* CUEMU_CP_ASYNC=now: copies land at issue instead, the other extreme: with
 * the block's threads run one after another, a copy into a stage that other
 * threads have yet to read (a missing barrier before the reuse) shows */
bool cp_async_now() {
    static int r = -1;
    if (r < 0) r = env_is("CUEMU_CP_ASYNC", "now");
    return r;
}

void cuemu_cp_async16(void *smem, const void *gmem, int valid) {
    if (!g_cur) fail("cp.async outside a kernel");
    if (cp_async_now()) {
        if (valid) memcpy(smem, gmem, 16);
        else memset(smem, 0, 16);
        return;
    }
    g_cur->copies.push_back({smem, valid ? gmem : nullptr, g_cur->committed});
}

void cuemu_cp_async_commit(void) {
    if (!g_cur) fail("cp.async.commit_group outside a kernel");
    g_cur->committed++;
}

/* the copies of every committed group but the n most recent land now, in issue order */
void cuemu_cp_async_wait(int n) {
    if (!g_cur) fail("cp.async.wait_group outside a kernel");
    auto &c = g_cur->copies;
    size_t keep = 0;
    for (size_t i = 0; i < c.size(); i++) {
        if (c[i].group < g_cur->committed - n) {
            if (c[i].src) memcpy(c[i].dst, c[i].src, 16);
            else memset(c[i].dst, 0, 16);
        } else {
            c[keep++] = c[i];
        }
    }
    c.resize(keep);
}

void *cuemu_shared(const void *key, size_t bytes) {
    if (!g_cur) fail("__shared__ memory outside a kernel");
    for (auto &s : g_shared)
        if (s.first == key) return s.second;
    void *p = nan_alloc(bytes, 16);
    g_shared.emplace_back(key, p);
    return p;
}

void *cuemu_dyn_smem(void) {
    if (!g_cur) fail("extern __shared__ memory outside a kernel");
    return g_dyn;
}

cudaError_t cuemu::launch(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                          bool pdl, std::function<void()> body) {
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!threads || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || !grid.x || !grid.y ||
        !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuemu: launch of %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)\n", name,
                grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return err(cudaErrorInvalidConfiguration);
    }
    auto lim = g_smem_limit.find(fn);
    size_t limit = lim == g_smem_limit.end() ? SMEM_DEFAULT : (size_t)lim->second;
    if (smem > limit) {
        fprintf(stderr, "cuemu: launch of %s: %zu bytes of dynamic shared memory, the kernel's limit is %zu%s\n", name,
                smem, limit, lim == g_smem_limit.end() ? " (48 KiB unless cudaFuncSetAttribute raises it)" : "");
        return err(cudaErrorInvalidValue);
    }
    char what[256];
    snprintf(what, sizeof what, "kernel %s <<<(%u,%u,%u), (%u,%u,%u), %zu>>>", name, grid.x, grid.y, grid.z, block.x,
             block.y, block.z, smem);
    std::string nm = name;
    return enqueue(s, [nm, grid, block, smem, pdl, body]() { run_grid(nm.c_str(), grid, block, smem, pdl, body); },
                   what, true, pdl);
}

/* ---- runtime API ------------------------------------------------------------ */

extern "C" {

/* CUEMU_DEVICES=N (0..16, default 1) devices, all the same emulated one: N
 * ranks of a data-parallel run each take their own (tests/cuemu/dp.sh).
 * CUDA_VISIBLE_DEVICES, as CUDA reads it (indices, up to the first that is
 * not one), shows a process only those, renumbered from 0: what a scheduler
 * does to give each rank its own GPU. A device's UUID names the machine's
 * device (its index among the N), not the number the process sees. */
static int machine_devices(void) {
    const char *v = getenv("CUEMU_DEVICES");
    int n = v && *v ? atoi(v) : 1;
    return n < 0 ? 0 : n > 16 ? 16 : n;
}
static int visible_map(int *map) {
    int n = machine_devices();
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v) {
        for (int i = 0; i < n; i++) map[i] = i;
        return n;
    }
    int k = 0;
    while (*v && k < 16) {
        char *end;
        long d = strtol(v, &end, 10);
        if (end == v || d < 0 || d >= n || (*end && *end != ',')) break;
        map[k++] = (int)d;
        v = *end ? end + 1 : end;
    }
    return k;
}
static int emu_devices(void) {
    int map[16];
    return visible_map(map);
}
static int current_device;

cudaError_t cudaGetDeviceCount(int *n) {
    *n = emu_devices();
    return *n ? cudaSuccess : err(cudaErrorNoDevice);
}
cudaError_t cudaGetDevice(int *dev) {
    *dev = current_device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) {
    if (dev < 0 || dev >= emu_devices()) return err(cudaErrorInvalidDevice);
    current_device = dev;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    int map[16], n = visible_map(map);
    if (dev < 0 || dev >= n) return err(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (CPU emulation of an H100)");
    snprintf(p->uuid.bytes, sizeof p->uuid.bytes, "cuemu-gpu-%d", map[dev]);
    p->totalGlobalMem = DEVICE_BYTES;
    p->sharedMemPerBlock = SMEM_DEFAULT;
    p->sharedMemPerBlockOptin = SMEM_OPTIN;
    p->sharedMemPerMultiprocessor = 233472;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev) {
    if (dev != 0) return err(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = SMEM_DEFAULT; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 233472; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = SMEM_OPTIN; break;
    default: return err(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;   /* carveout: a hint */
    if (value < 0 || value > SMEM_OPTIN) return err(cudaErrorInvalidValue);
    g_smem_limit[fn] = value;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    wait_all();
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
#define N(x) \
    case x: return #x;
        N(cudaSuccess) N(cudaErrorInvalidValue) N(cudaErrorMemoryAllocation) N(cudaErrorInitializationError)
        N(cudaErrorInvalidConfiguration) N(cudaErrorInvalidDevicePointer) N(cudaErrorInvalidMemcpyDirection)
        N(cudaErrorInsufficientDriver) N(cudaErrorNoDevice) N(cudaErrorInvalidDevice)
        N(cudaErrorNoKernelImageForDevice) N(cudaErrorInvalidResourceHandle) N(cudaErrorIllegalState)
        N(cudaErrorIllegalAddress) N(cudaErrorLaunchOutOfResources) N(cudaErrorNotReady) N(cudaErrorNotSupported)
        N(cudaErrorStreamCaptureUnsupported) N(cudaErrorStreamCaptureInvalidated) N(cudaErrorStreamCaptureUnmatched)
#undef N
    }
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
    }
}

/* memory */

cudaError_t cudaMalloc(void **p, size_t n) {
    *p = nullptr;
    if (g_dev_used + n > DEVICE_BYTES) return err(cudaErrorMemoryAllocation);
    /* cudaMalloc's alignment is 256; whole pages here, so that the PDL check can protect them */
    *p = pdl_check() ? nan_alloc(page_up(n ? n : 1), page_size()) : nan_alloc(n, 256);   /* unwritten: NaN */
    g_mem[(uintptr_t)*p] = Alloc{n, false};
    g_dev_used += n;
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = nullptr;
    /* tests: pinned host memory that runs out (CUEMU_PINNED_FAIL=1) */
    const char *pf = getenv("CUEMU_PINNED_FAIL");
    if (pf && !strcmp(pf, "1")) return err(cudaErrorMemoryAllocation);
    *p = nan_alloc(n, 4096);
    g_mem[(uintptr_t)*p] = Alloc{n, true};
    return cudaSuccess;
}
static cudaError_t free_alloc(void *p, bool pinned, const char *call) {
    if (!p) return cudaSuccess;
    auto it = g_mem.find((uintptr_t)p);
    if (it == g_mem.end() || it->second.pinned != pinned)
        fail("%s(%p): not a live %s allocation (double free, or the wrong kind)", call, p, pinned ? "cudaMallocHost" : "cudaMalloc");
    wait_all();   /* cudaFree synchronises the device; pending work may still use the memory */
    if (!pinned) forget_written();   /* the pages go back to the heap */
    if (!pinned) g_dev_used -= it->second.size;
    g_mem.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { return free_alloc(p, false, "cudaFree"); }
cudaError_t cudaFreeHost(void *p) { return free_alloc(p, true, "cudaFreeHost"); }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = DEVICE_BYTES - g_dev_used;
    *total_bytes = DEVICE_BYTES;
    return cudaSuccess;
}

/* Check a copy's pointers against its kind; `kind` resolved for Default. */
static cudaMemcpyKind check_copy(const char *call, void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    if (kind == cudaMemcpyDefault) {
        bool sd = is_device(src, n), dd = is_device(dst, n);
        kind = sd ? (dd ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                  : (dd ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    }
    bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dd) need_device(call, "destination", dst, n);
    else need_host(call, "destination", dst, n);
    if (sd) need_device(call, "source", src, n);
    else need_host(call, "source", src, n);
    return kind;
}

static std::string copy_what(const char *call, void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    static const char *k[] = {"HtoH", "HtoD", "DtoH", "DtoD"};
    char b[160];
    snprintf(b, sizeof b, "%s %s %zu bytes %p -> %p", call, k[kind], n, src, dst);
    return b;
}

/* One copy on stream st. Pageable host memory is staged at the call (its
 * bytes are taken now, as the driver does); pinned memory is read or written
 * when the copy runs. */
static cudaError_t copy_on(const char *call, void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                           cudaStream_t st) {
    kind = check_copy(call, dst, src, n, kind);
    if (!n) return cudaSuccess;
    std::string what = copy_what(call, dst, src, n, kind);
    bool pageable_src = (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost) && !is_pinned(src, n);
    bool pageable_dst = (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost) && !is_pinned(dst, n);
    CUstream_st *s = S(st);
    if (s->capture && (pageable_src || pageable_dst)) {
        s->invalidated = true;
        fprintf(stderr, "cuemu: %s: pageable host memory in a stream capture\n", what.c_str());
        return err(cudaErrorStreamCaptureUnsupported);
    }
    if (pageable_src) {
        std::vector<char> staged((const char *)src, (const char *)src + n);
        return enqueue(st, [dst, staged]() { memcpy(dst, staged.data(), staged.size()); }, what);
    }
    return enqueue(st, [dst, src, n]() { memcpy(dst, src, n); }, what);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    return copy_on("cudaMemcpyAsync", dst, src, n, kind, s);
}

/* cudaMemcpy (the legacy stream; CUDA's "API synchronization behavior"):
 * returns once a copy into host memory has landed, or a copy from pinned
 * memory is done; a copy from pageable memory returns once staged (its DMA
 * may still be pending) and a device-to-device copy does not wait at all. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    kind = check_copy("cudaMemcpy", dst, src, n, kind);
    bool pageable = kind == cudaMemcpyHostToDevice && !is_pinned(src, n);
    if (pageable) wait_stream(&g_legacy);   /* "a stream sync is performed before the copy is initiated" */
    cudaError_t e = copy_on("cudaMemcpy", dst, src, n, kind, nullptr);
    if (!e && kind != cudaMemcpyDeviceToDevice && !pageable) wait_stream(&g_legacy);
    return e;
}

static cudaError_t memset_on(const char *call, void *p, int value, size_t n, cudaStream_t st) {
    need_device(call, "destination", p, n);
    if (!n) return cudaSuccess;
    char what[128];
    snprintf(what, sizeof what, "%s %zu bytes at %p", call, n, p);
    return enqueue(st, [p, value, n]() { memset(p, value, n); }, what);
}
/* cudaMemset on device memory is asynchronous to the host (legacy stream). */
cudaError_t cudaMemset(void *p, int value, size_t n) { return memset_on("cudaMemset", p, value, n, nullptr); }
cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s) {
    return memset_on("cudaMemsetAsync", p, value, n, s);
}

/* streams and graphs */

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    *s = new CUstream_st{flags, {}, nullptr, false, false, {}, {}};
    g_streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || !known_stream(s)) return err(cudaErrorInvalidResourceHandle);
    drain(s, UINT64_MAX);   /* work already issued still completes */
    for (size_t i = 0; i < g_streams.size(); i++)
        if (g_streams[i] == s) g_streams.erase(g_streams.begin() + (long)i);
    delete s->capture;
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t st) {
    CUstream_st *s = S(st);
    if (!known_stream(s)) return err(cudaErrorInvalidResourceHandle);
    if (s->capture) {
        s->invalidated = true;
        fprintf(stderr, "cuemu: cudaStreamSynchronize on a capturing stream\n");
        return err(cudaErrorStreamCaptureUnsupported);
    }
    wait_stream(s);
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode) {
    CUstream_st *s = S(st);
    if (s == &g_legacy) return err(cudaErrorStreamCaptureUnsupported);
    if (s->capture) return err(cudaErrorIllegalState);
    (void)mode;
    s->capture = new CUgraph_st;
    s->invalidated = false;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g) {
    CUstream_st *s = S(st);
    *g = nullptr;
    if (!s->capture) return err(cudaErrorIllegalState);
    CUgraph_st *graph = s->capture;
    s->capture = nullptr;
    if (s->invalidated) {
        delete graph;
        return err(cudaErrorStreamCaptureInvalidated);
    }
    *g = graph;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags) {
    (void)flags;
    if (!g) return err(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return err(cudaErrorInvalidValue);
    std::vector<Op> ops = exec->ops;   /* the exec may be destroyed before it runs */
    return enqueue(s, [ops]() {
        CUstream_st *on = g_running;
        for (size_t i = 0; i < ops.size(); i++) run_op(on, ops[i], i + 1 < ops.size() ? &ops[i + 1] : nullptr);
    }, "cudaGraphLaunch");
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}

/* ---- events: the host's monotonic clock when the stream runs the record ---------- */
}  // extern "C"
struct CUevent_st {
    double t_ms;
    bool recorded, done;
    CUstream_st *s;
};
extern "C" {
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new CUevent_st{0.0, false, false, nullptr};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!e) return err(cudaErrorInvalidResourceHandle);
    if (e->s && e->recorded && !e->done) drain(e->s, UINT64_MAX);   /* its record op points at it */
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st) {
    if (!e) return err(cudaErrorInvalidResourceHandle);
    e->s = S(st);
    e->recorded = true;
    e->done = false;
    return enqueue(st, [e]() {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        e->t_ms = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
        e->done = true;
    }, "cudaEventRecord");
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return err(cudaErrorInvalidResourceHandle);
    if (e->recorded && !e->done) wait_stream(e->s);
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!a || !b) return err(cudaErrorInvalidResourceHandle);
    if (!a->done || !b->done) return err(cudaErrorNotReady);
    *ms = (float)(b->t_ms - a->t_ms);
    return cudaSuccess;
}

/* ---- cuBLAS --------------------------------------------------------------------- */

}  // extern "C"

struct cublasContext {
    cudaStream_t stream;
    void *ws;
    size_t ws_bytes;
};

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    *h = new cublasContext{nullptr, nullptr, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    /* as cuBLAS documents: it "unconditionally resets the cuBLAS library
     * workspace back to the default workspace pool" (cublasSetWorkspace's) */
    h->ws = nullptr;
    h->ws_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    need_device("cublasSetWorkspace", "workspace", ws, bytes);
    if ((uintptr_t)ws % 256) return CUBLAS_STATUS_INVALID_VALUE;
    h->ws = ws;
    h->ws_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    (void)mode;
    return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
const char *cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}
const char *cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

}  // extern "C"

namespace {

size_t elem_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
float load(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

/* Elements spanned by a column-major rows x cols operand with leading dimension ld. */
size_t span(int rows, int cols, int ld) { return rows && cols ? (size_t)ld * (size_t)(cols - 1) + (size_t)rows : 0; }

void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A,
          cudaDataType At, int lda, const void *B, cudaDataType Bt, int ldb, float beta, void *C, cudaDataType Ct,
          int ldc) {
    /* op(A) (m x k) row by row and op(B) (k x n) column by column, as fp32, so
     * that every output is one contiguous dot product (fp32 accumulation) */
    std::vector<float> a((size_t)m * k), b((size_t)n * k);
    for (int i = 0; i < m; i++)
        for (int l = 0; l < k; l++)
            a[(size_t)i * k + l] = load(A, At, ta == CUBLAS_OP_N ? i + (size_t)l * lda : l + (size_t)i * lda);
    for (int j = 0; j < n; j++)
        for (int l = 0; l < k; l++)
            b[(size_t)j * k + l] = load(B, Bt, tb == CUBLAS_OP_N ? l + (size_t)j * ldb : j + (size_t)l * ldb);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            const float *x = &a[(size_t)i * k], *y = &b[(size_t)j * k];
            float s = 0.0f;
            for (int l = 0; l < k; l++) s += x[l] * y[l];
            size_t c = i + (size_t)j * ldc;
            float v = alpha * s;
            if (beta != 0.0f) v += beta * load(C, Ct, c);   /* beta 0: C is not read (NaN stays out) */
            if (Ct == CUDA_R_32F) ((float *)C)[c] = v;
            else ((__nv_bfloat16 *)C)[c] = __float2bfloat16(v);
        }
}

}  // namespace

extern "C" cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                       int k, const void *alpha, const void *A, cudaDataType At, int lda,
                                       const void *B, cudaDataType Bt, int ldb, const void *beta, void *C,
                                       cudaDataType Ct, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)algo;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) || m < 0 || n < 0 ||
        k < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    int ra = ta == CUBLAS_OP_N ? m : k, ca = ta == CUBLAS_OP_N ? k : m;   /* A as stored: ra x ca */
    int rb = tb == CUBLAS_OP_N ? k : n, cb = tb == CUBLAS_OP_N ? n : k;
    if (lda < (ra > 1 ? ra : 1) || ldb < (rb > 1 ? rb : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr, "cuemu: cublasGemmEx: leading dimension too small (m %d n %d k %d, lda %d ldb %d ldc %d)\n", m,
                n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    bool types = compute == CUBLAS_COMPUTE_32F &&
                 ((At == CUDA_R_16BF && Bt == CUDA_R_16BF && (Ct == CUDA_R_16BF || Ct == CUDA_R_32F)) ||
                  (At == CUDA_R_32F && Bt == CUDA_R_32F && Ct == CUDA_R_32F));
    if (!types) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    /* host pointer mode (the default): the scalars are read now */
    if (touches_device(alpha, 4) || touches_device(beta, 4))
        fail("cublasGemmEx: alpha/beta in device memory, but the handle is in host pointer mode");
    float al = *(const float *)alpha, be = *(const float *)beta;
    size_t bc = span(m, n, ldc) * elem_size(Ct);
    need_device("cublasGemmEx", "C", C, bc);
    if (k) {
        size_t ba = span(ra, ca, lda) * elem_size(At), bb = span(rb, cb, ldb) * elem_size(Bt);
        need_device("cublasGemmEx", "A", A, ba);
        need_device("cublasGemmEx", "B", B, bb);
        auto overlap = [](const void *p, size_t np, const void *q, size_t nq) {
            return (const char *)p < (const char *)q + nq && (const char *)q < (const char *)p + np;
        };
        if (overlap(C, bc, A, ba) || overlap(C, bc, B, bb)) fail("cublasGemmEx: C overlaps A or B");
    }
    char what[160];
    snprintf(what, sizeof what, "cublasGemmEx %c%c m %d n %d k %d", ta == CUBLAS_OP_N ? 'N' : 'T',
             tb == CUBLAS_OP_N ? 'N' : 'T', m, n, k);
    /* a product captured into a graph runs on the caller's workspace: on
     * cuBLAS' default pool it allocates one inside the graph (memory nodes,
     * or a workspace per graph), which the forward's fixed workspace is there
     * to avoid (docs/CUDA.md, "CUDA graphs") */
    if (known_stream(S(h->stream)) && S(h->stream)->capture && !h->ws)
        fail("%s captured into a graph on cuBLAS' default workspace pool: cublasSetWorkspace after the handle's "
             "last cublasSetStream (which resets it)", what);
    cudaError_t e = enqueue(h->stream, [=]() { gemm(ta, tb, m, n, k, al, A, At, lda, B, Bt, ldb, be, C, Ct, ldc); }, what);
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
