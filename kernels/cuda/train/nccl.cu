/* nccl.cu: libcore/cuda_nccl.h: the gradient all-reduce of data-parallel
 * training on CUDA devices (and ZeRO-1's reduce-scatter and all-gather),
 * over NCCL loaded at run time.
 *
 * Why dlopen and not -lnccl: every cllm binary links libcllm, and a CUDA
 * build must still run where NCCL is not installed (a laptop, CI, a machine
 * with one GPU); only `cllm-train --allreduce nccl` (or the default with
 * several ranks on CUDA) needs it. nccl.h gives the types and signatures; the
 * functions are looked up by name, so a mismatch is a compile error here. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/common.h"

extern "C" {
#include "cuda_nccl.h"
#include "dist.h"
}

#if __has_include(<nccl.h>)
#include <nccl.h>
#define HAVE_NCCL_H 1
#else
#define HAVE_NCCL_H 0
#endif

#if HAVE_NCCL_H

namespace {

/* The NCCL functions used, resolved from the loaded library. */
struct nccl_api {
    void *lib;
    char path[256];
    decltype(&ncclGetVersion) get_version;
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRank) comm_init_rank;
    decltype(&ncclCommDestroy) comm_destroy;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclReduceScatter) reduce_scatter;
    decltype(&ncclAllGather) all_gather;
    decltype(&ncclGetErrorString) error_string;
};

/* Loaded once per process and never unloaded: NCCL starts threads of its own
 * (and a failed ncclCommInitRank may leave them running), so dlclose could
 * pull its code from under them. */
nccl_api g_api;

int load_api(nccl_api **out) {
    *out = NULL;
    if (g_api.lib) {
        *out = &g_api;
        return 0;
    }
    nccl_api *a = &g_api;
    memset(a, 0, sizeof *a);
    const char *env = getenv("CLLM_NCCL_LIB");
    const char *names[] = {env && *env ? env : "libnccl.so.2", "libnccl.so"};
    const int n_names = env && *env ? 1 : 2;   /* a named file is the only one tried */
    const char *why = "not found";
    for (int i = 0; i < n_names && !a->lib; i++) {
        a->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (a->lib) snprintf(a->path, sizeof a->path, "%s", names[i]);
        else why = dlerror();
    }
    if (!a->lib)
        return cllm_error(CLLM_EUNSUP, "NCCL: cannot load %s: %s (install NCCL, point LD_LIBRARY_PATH at it or "
                          "CLLM_NCCL_LIB at the file, or sum on the host with --allreduce mpi)",
                          names[0], why ? why : "unknown error");
    struct { void **fn; const char *name; } syms[] = {
        {(void **)&a->get_version, "ncclGetVersion"},   {(void **)&a->get_unique_id, "ncclGetUniqueId"},
        {(void **)&a->comm_init_rank, "ncclCommInitRank"}, {(void **)&a->comm_destroy, "ncclCommDestroy"},
        {(void **)&a->all_reduce, "ncclAllReduce"},     {(void **)&a->reduce_scatter, "ncclReduceScatter"},
        {(void **)&a->all_gather, "ncclAllGather"},
        {(void **)&a->error_string, "ncclGetErrorString"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].fn = dlsym(a->lib, syms[i].name);
        if (!*syms[i].fn) {
            int rc = cllm_error(CLLM_EUNSUP, "NCCL: %s has no %s (NCCL 2.x needed)", a->path, syms[i].name);
            dlclose(a->lib);   /* nothing of it has run */
            memset(a, 0, sizeof *a);
            return rc;
        }
    }
    *out = a;
    return 0;
}

}  // namespace

struct cllm_nccl {
    const nccl_api *api;
    ncclComm_t comm;
    int device, rank, size;
    char desc[320];
};

static int nccl_fail(const cllm_nccl *c, ncclResult_t r, const char *what) {
    return cllm_error(CLLM_EIO, "NCCL %s (rank %d of %d, device %d): %s", what, c->rank, c->size, c->device,
                      c->api ? c->api->error_string(r) : "error");
}

extern "C" int cllm_nccl_init(cllm_nccl **out, int device) {
    *out = NULL;
    cllm_nccl *c = (cllm_nccl *)calloc(1, sizeof *c);
    if (!c) return cllm_error(CLLM_ENOMEM, "out of memory (NCCL state)");
    c->device = device;
    c->rank = cllm_dist_rank();
    c->size = cllm_dist_size();
    /* Every rank tries to load NCCL and the ranks agree on the outcome before
     * anyone waits in the broadcast: a rank without NCCL must not leave the
     * others blocked in it. */
    nccl_api *api = NULL;
    int rc = load_api(&api);
    c->api = api;
    int64_t failed = rc != 0;
    char saved[512] = "";
    if (rc) snprintf(saved, sizeof saved, "%s", cllm_errmsg());
    int drc = cllm_dist_max_i64(&failed, 1);
    if (drc || failed) {
        free(c);
        if (drc) return drc;
        return rc ? cllm_error(rc, "%s", saved) : cllm_error(CLLM_EUNSUP, "NCCL: another rank could not load it");
    }
    int version = 0;
    ncclResult_t r = c->api->get_version(&version);
    if (r != ncclSuccess) version = 0;
    snprintf(c->desc, sizeof c->desc, "NCCL %d.%d.%d (%s)", version / 10000, version / 100 % 100, version % 100,
             c->api->path);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int64_t bad = 0;
    if ((rc = CUDA_CHECK(cudaSetDevice(device)))) bad = 1;
    if (!bad && c->rank == 0 && (r = c->api->get_unique_id(&id)) != ncclSuccess) {
        rc = nccl_fail(c, r, "unique id");
        bad = 1;
    }
    if ((drc = cllm_dist_max_i64(&bad, 1)) || bad || (drc = cllm_dist_bcast(&id, sizeof id, 0))) {
        if (!rc) rc = drc ? drc : cllm_error(CLLM_EIO, "NCCL: another rank failed to set up its device or the id");
        free(c);
        return rc;
    }
    if ((r = c->api->comm_init_rank(&c->comm, c->size, id, c->rank)) != ncclSuccess) {
        rc = nccl_fail(c, r, "communicator");
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

extern "C" void cllm_nccl_free(cllm_nccl *c) {
    if (!c) return;
    if (c->comm) c->api->comm_destroy(c->comm);
    free(c);
}

extern "C" int cllm_nccl_sum_f32(cllm_nccl *c, float *buf, size_t n, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    ncclResult_t r = c->api->all_reduce(buf, buf, n, ncclFloat32, ncclSum, c->comm, s);
    if (r != ncclSuccess) return nccl_fail(c, r, "all-reduce");
    return CUDA_CHECK(cudaStreamSynchronize(s));
}

/* In place as NCCL defines it: the receive buffer of the reduce-scatter and
 * the send buffer of the all-gather are this rank's slice of buf. */
extern "C" int cllm_nccl_sum_scatter_f32(cllm_nccl *c, float *buf, size_t per, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    ncclResult_t r = c->api->reduce_scatter(buf, buf + (size_t)c->rank * per, per, ncclFloat32, ncclSum, c->comm, s);
    if (r != ncclSuccess) return nccl_fail(c, r, "reduce-scatter");
    return CUDA_CHECK(cudaStreamSynchronize(s));
}

extern "C" int cllm_nccl_allgather_f32(cllm_nccl *c, float *buf, size_t per, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    ncclResult_t r = c->api->all_gather(buf + (size_t)c->rank * per, buf, per, ncclFloat32, c->comm, s);
    if (r != ncclSuccess) return nccl_fail(c, r, "all-gather");
    return CUDA_CHECK(cudaStreamSynchronize(s));
}

extern "C" const char *cllm_nccl_describe(const cllm_nccl *c) { return c->desc; }

#else /* no nccl.h at build time */

struct cllm_nccl { int unused; };

extern "C" int cllm_nccl_init(cllm_nccl **out, int device) {
    (void)device;
    *out = NULL;
    return cllm_error(CLLM_EUNSUP, "NCCL: this build had no nccl.h (rebuild with NCCL's headers, or sum on the host "
                      "with --allreduce mpi)");
}
extern "C" void cllm_nccl_free(cllm_nccl *c) { (void)c; }
extern "C" int cllm_nccl_sum_f32(cllm_nccl *c, float *buf, size_t n, void *stream) {
    (void)c; (void)buf; (void)n; (void)stream;
    return cllm_error(CLLM_EUNSUP, "NCCL: not in this build");
}
extern "C" int cllm_nccl_sum_scatter_f32(cllm_nccl *c, float *buf, size_t per, void *stream) {
    return cllm_nccl_sum_f32(c, buf, per, stream);
}
extern "C" int cllm_nccl_allgather_f32(cllm_nccl *c, float *buf, size_t per, void *stream) {
    return cllm_nccl_sum_f32(c, buf, per, stream);
}
extern "C" const char *cllm_nccl_describe(const cllm_nccl *c) { (void)c; return "no NCCL"; }

#endif

extern "C" int cllm_nccl_pick_device(int *device, int exclusive) {
    *device = 0;
    int n = 0, rc = CUDA_CHECK(cudaGetDeviceCount(&n));
    if (rc) return rc;
    if (n < 1) return cllm_error(CLLM_EUNSUP, "no CUDA device");
    int local = cllm_dist_local_rank(), local_n = cllm_dist_local_size(), size = cllm_dist_size();
    *device = local % n;
    if (!exclusive || size == 1) return 0;
    /* One device per rank, told by the devices' UUIDs, not by counting: a
     * scheduler that gives each rank its own GPU (SLURM's --gpus-per-task=1)
     * shows each rank one device while the machine runs several ranks, and
     * that is fine; two ranks whose picks are the same GPU are not. */
    cudaDeviceProp pr;
    if ((rc = CUDA_CHECK(cudaGetDeviceProperties(&pr, *device)))) return rc;
    int64_t *ids = (int64_t *)malloc((size_t)size * 2 * sizeof *ids);
    if (!ids) return cllm_error(CLLM_ENOMEM, "out of memory (device UUIDs of %d ranks)", size);
    for (int i = 0; i < 2 * size; i++) ids[i] = INT64_MIN;   /* the max over ranks is each rank's own */
    const int me = cllm_dist_rank();
    memcpy(&ids[2 * me], pr.uuid.bytes, 16);
    if ((rc = cllm_dist_max_i64(ids, (size_t)size * 2))) { free(ids); return rc; }
    for (int i = 0; i < size && !rc; i++)
        if (i != me && ids[2 * i] == ids[2 * me] && ids[2 * i + 1] == ids[2 * me + 1])
            rc = cllm_error(CLLM_EINVAL, "ranks %d and %d use the same CUDA device (%d ranks on this machine, %d "
                            "device%s visible to this one): one device per rank (start fewer ranks per node, give each "
                            "rank its own GPU, or sum on the host with --allreduce mpi)",
                            i < me ? i : me, i < me ? me : i, local_n, n, n == 1 ? "" : "s");
    free(ids);
    return rc;
}
