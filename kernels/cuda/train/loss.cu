/* loss.cu: the losses of libcore/loss.h on the device, with their logit
 * gradients, over chunks of the LM head's loss rows, and the row gather /
 * scatter around the LM head product.
 *
 * Only loss rows get logits: the host gathers the final normed rows of the
 * N loss rows (rows_gather), computes NC rows of logits at a time (one
 * cuBLAS product into an (NC, V) fp32 chunk), and loss_forward_backward turns
 * each chunk row into its loss and a bf16 dlogits row that feeds the two
 * backward products of the same chunk. So no (R, V) tensor exists; memory is
 * NC*V*(4 + 2) bytes plus the teacher rows.
 *
 * loss_kernel1: one block of 512 threads per chunk row, three passes over
 * the row (L2-resident, 192 KiB at V = 49,152):
 *   1. max and sum of the logits (and the teacher row's max); copy to the
 *      save slot;
 *   2. sum_v exp(x - max) (and the teacher's) -> lse, lse_t;
 *   3. q = exp(x - lse), p = exp(t - lse_t), dlogits, the soft loss.
 * Reductions are fp32 (the CPU's are double; at V = 49,152 the fp32 sums are
 * good to ~1e-6 relative). Per-row losses are written unscaled; the host
 * multiplies by the scale and sums in double, as loss.c does. */
#include "train_kernels.h"

namespace cllm_train {

/* xg (N, C) bf16; xn (R, C) bf16; rows (N) */
__global__ void rows_gather_kernel1(floatX *xg, const floatX *xn, const int *rows, size_t M,
                                    int C) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < M;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t i = k / C, c = k % C;
        xg[k] = xn[(size_t)rows[i] * C + c];
    }
}

/* dx (R, C) fp32; dxg (N, C) fp32; rows (N), distinct */
__global__ void rows_scatter_kernel1(float *dx, const float *dxg, const int *rows, size_t M,
                                     int C) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < M;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t i = k / C, c = k % C;
        dx[(size_t)rows[i] * C + c] = dxg[k];
    }
}

static int grid_for(size_t N) {
    size_t b = (N + 255) / 256;
    return (int)(b < 65535 ? (b ? b : 1) : 65535);
}

int rows_gather(floatX *xg, const floatX *xn, const int *rows, int N, int C, cudaStream_t stream) {
    size_t M = (size_t)N * C;
    rows_gather_kernel1<<<grid_for(M), 256, 0, stream>>>(xg, xn, rows, M, C);
    return CUDA_CHECK_LAUNCH();
}

int rows_scatter(float *dx, const float *dxg, const int *rows, int N, int C, cudaStream_t stream) {
    size_t M = (size_t)N * C;
    rows_scatter_kernel1<<<grid_for(M), 256, 0, stream>>>(dx, dxg, rows, M, C);
    return CUDA_CHECK_LAUNCH();
}

/* dlogits (NC, V) bf16 or NULL; losses (N, 2); tlogits (S, V); logits (NC, V);
 * target, ce_scale, teacher, soft_scale, save (N). grid NC */
__global__ void loss_kernel1(floatX *dlogits, float *losses, float *tlogits, const float *logits,
                             const int *target, const float *ce_scale, const int *teacher,
                             const float *soft_scale, const int *save, float eps, int i0, int V) {
    __shared__ float red[32];
    int k = blockIdx.x, i = i0 + k;
    const float *x = logits + (size_t)k * V;
    int tgt = target[i], tch = teacher[i], sv = save[i];
    const float *tx = tch >= 0 ? tlogits + (size_t)tch * V : NULL;
    float *sx = sv >= 0 ? tlogits + (size_t)sv * V : NULL;

    float mx = -INFINITY, mt = -INFINITY, sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float xv = x[v];
        mx = fmaxf(mx, xv);
        sum += xv;
        if (sx) sx[v] = xv;
        if (tx) mt = fmaxf(mt, tx[v]);
    }
    mx = block_max(mx, red);
    sum = block_sum(sum, red);
    if (tx) mt = block_max(mt, red);        /* tx is uniform over the block */

    float se = 0.0f, st = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        se += expf(x[v] - mx);
        if (tx) st += expf(tx[v] - mt);
    }
    se = block_sum(se, red);
    if (tx) st = block_sum(st, red);
    float lse = mx + logf(se), lset = tx ? mt + logf(st) : 0.0f;

    float cs = tgt >= 0 ? ce_scale[i] : 0.0f, ss = tx ? soft_scale[i] : 0.0f;
    float off = eps / (float)V, hit = 1.0f - eps;
    float soft = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float logq = x[v] - lse;
        float q = expf(logq), d = 0.0f;
        if (tgt >= 0) d += cs * (q - off - (v == tgt ? hit : 0.0f));
        if (tx) {
            float p = expf(tx[v] - lset);
            d += ss * (q - p);
            soft -= p * logq;
        }
        if (dlogits) dlogits[(size_t)k * V + v] = __float2bfloat16(d);
    }
    if (tx) soft = block_sum(soft, red);
    if (threadIdx.x == 0) {
        losses[2 * (size_t)i] = tgt >= 0 ? hit * (lse - x[tgt]) + eps * (lse - sum / (float)V) : 0.0f;
        losses[2 * (size_t)i + 1] = tx ? soft : 0.0f;
    }
}

int loss_forward_backward(floatX *dlogits, float *losses, float *tlogits, const float *logits,
                          const int *target, const float *ce_scale, const int *teacher,
                          const float *soft_scale, const int *save, float eps, int i0, int NC,
                          int V, cudaStream_t stream) {
    loss_kernel1<<<NC, 512, 0, stream>>>(dlogits, losses, tlogits, logits, target, ce_scale,
                                         teacher, soft_scale, save, eps, i0, V);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
