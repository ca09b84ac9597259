/* nccl_emu.cc: NCCL for the CPU emulation (tests/cuemu/, docs/CUDA.md):
 * the functions kernels/cuda/train/nccl.cu loads at run time (and ncclCommAbort), built as
 * build-cuemu/libnccl-emu.so and named by CLLM_NCCL_LIB, so that the
 * unchanged loading, bootstrap and all-reduce code of data-parallel training
 * runs in make check.
 *
 * "Device" memory is host memory in the emulator, so the all-reduce is
 * MPI_Allreduce on the buffer itself (the reduce-scatter and all-gather of
 * ZeRO-1 MPI_Reduce_scatter_block and MPI_Allgather) when the process is an MPI rank (built
 * with CUEMU_MPI), a copy otherwise. It runs at once, not in stream order:
 * the caller's stream must be idle, as it is after every cllm_cuda_train
 * call (they synchronise before returning).
 *
 * The unique id carries a tag and random bytes; ncclCommInitRank checks that
 * every rank got the same id (the MPI broadcast of nccl.cu's bootstrap) and
 * that nranks and rank are MPI's, so a broken bootstrap fails here as it
 * would hang or fail on GPUs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nccl.h"

#if CUEMU_MPI
#include <mpi.h>
#endif

struct ncclComm {
    int nranks, rank;
};

static const char TAG[] = "cuemu-nccl-id";

extern "C" ncclResult_t ncclGetVersion(int *version) {
    *version = 22800;   /* as NCCL 2.28.0 reports itself */
    return ncclSuccess;
}

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, TAG, sizeof TAG);
    uint64_t r = (uint64_t)time(NULL) * 6364136223846793005ull ^ (uint64_t)getpid() * 1442695040888963407ull;
    memcpy(id->internal + 64, &r, sizeof r);
    return ncclSuccess;
}

static uint64_t id_hash(const ncclUniqueId *id) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) h = (h ^ (unsigned char)id->internal[i]) * 1099511628211ull;
    return h;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    *comm = NULL;
    if (memcmp(id.internal, TAG, sizeof TAG)) {
        fprintf(stderr, "nccl-emu: ncclCommInitRank: not an id of ncclGetUniqueId\n");
        return ncclInvalidArgument;
    }
    int world = 1, me = 0;
#if CUEMU_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) {
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        MPI_Comm_rank(MPI_COMM_WORLD, &me);
        uint64_t h = id_hash(&id), lo = h, hi = h;
        if (MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS ||
            MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
            return ncclSystemError;
        if (lo != hi) {
            fprintf(stderr, "nccl-emu: ncclCommInitRank: the ranks hold different ids\n");
            return ncclInvalidUsage;
        }
    }
#else
    (void)id_hash;
#endif
    if (nranks != world || rank != me) {
        fprintf(stderr, "nccl-emu: ncclCommInitRank(%d ranks, rank %d) in a world of %d where this is rank %d\n",
                nranks, rank, world, me);
        return ncclInvalidUsage;
    }
    ncclComm_t c = (ncclComm_t)calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->nranks = nranks;
    c->rank = rank;
    *comm = c;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    free(comm);
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

extern "C" ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                                      ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (!comm || datatype != ncclFloat32 || op != ncclSum || (count && (!sendbuff || !recvbuff)))
        return ncclInvalidArgument;
    if (sendbuff != recvbuff) memmove(recvbuff, sendbuff, count * sizeof(float));
#if CUEMU_MPI
    float *p = (float *)recvbuff;
    while (comm->nranks > 1 && count) {
        int c = count > (1u << 30) ? 1 << 30 : (int)count;
        if (MPI_Allreduce(MPI_IN_PLACE, p, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
        p += c;
        count -= (size_t)c;
    }
#else
    if (comm->nranks > 1) return ncclInvalidUsage;
#endif
    return ncclSuccess;
}

/* recvbuff == sendbuff + rank * recvcount is NCCL's in-place form; MPI's in
 * place puts rank r's block at the start of the buffer instead. */
extern "C" ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                                          ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (!comm || datatype != ncclFloat32 || op != ncclSum || recvcount > (1u << 30) ||
        (recvcount && (!sendbuff || !recvbuff)))
        return ncclInvalidArgument;
    const float *send = (const float *)sendbuff;
    float *recv = (float *)recvbuff;
    const int in_place = send + (size_t)comm->rank * recvcount == recv;
#if CUEMU_MPI
    if (comm->nranks > 1) {
        int e = in_place ? MPI_Reduce_scatter_block(MPI_IN_PLACE, (void *)send, (int)recvcount, MPI_FLOAT, MPI_SUM,
                                                    MPI_COMM_WORLD)
                         : MPI_Reduce_scatter_block(send, recv, (int)recvcount, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return ncclSystemError;
        if (in_place && recvcount) memmove(recv, send, recvcount * sizeof(float));
        return ncclSuccess;
    }
#else
    if (comm->nranks > 1) return ncclInvalidUsage;
#endif
    if (!in_place) memmove(recv, send, recvcount * sizeof(float));
    return ncclSuccess;
}

extern "C" ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                                      ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    if (!comm || datatype != ncclFloat32 || sendcount > (1u << 30) || (sendcount && (!sendbuff || !recvbuff)))
        return ncclInvalidArgument;
    const float *send = (const float *)sendbuff;
    float *recv = (float *)recvbuff;
    const int in_place = recv + (size_t)comm->rank * sendcount == send;
#if CUEMU_MPI
    if (comm->nranks > 1) {
        int e = in_place ? MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, (int)sendcount, MPI_FLOAT, MPI_COMM_WORLD)
                         : MPI_Allgather(send, (int)sendcount, MPI_FLOAT, recv, (int)sendcount, MPI_FLOAT, MPI_COMM_WORLD);
        return e == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
    }
#else
    if (comm->nranks > 1) return ncclInvalidUsage;
#endif
    if (!in_place) memmove(recv, send, sendcount * sizeof(float));
    return ncclSuccess;
}

extern "C" const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    }
    return "unknown result code";
}
