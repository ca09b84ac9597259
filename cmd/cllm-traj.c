/* cllm-traj: collect Jacobi trajectories (consistency training data). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "forward.h"
#include "model.h"
#include "prompts.h"
#include "traj.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-traj -m MODEL [OPTION]... [FILE]\n"
        "Collect the Jacobi trajectories of the answer to every prompt of FILE (a stream\n"
        "of prompt records, JSONL, or text lines; standard input when none or -): the\n"
        "answer is made in chunks of N tokens, each solved by Jacobi iteration from a\n"
        "random window; one traj record per chunk (its states and its fixed point).\n"
        "\n"
        "Options:\n"
        "  -m, --model FILE        model: a .gguf file or a HF safetensors directory\n"
        "  -o, --output FILE       write to FILE instead of standard output\n"
        "  -f, --force             write a binary stream even to a terminal\n"
        "  -n, --block N           chunk (Jacobi window) size [16]\n"
        "      --max-new-tokens N  stop after N new tokens, rounded up to whole chunks [256]\n"
        "      --batch B           prompts decoded at once (continuous batching) [1]\n"
        "      --batch-invariant   on CUDA, records that do not depend on --batch (every\n"
        "                          product through the fixed-order kernel, not cuBLAS;\n"
        "                          slower)\n"
        "      --init prompt|vocab|pad  initial window: random tokens of the chunk's\n"
        "                          context (prompt + prefix), random vocabulary tokens,\n"
        "                          or the pad token [prompt]\n"
        "      --aug               add the reference's augmented states (a random half of\n"
        "                          the wrong tokens of a state set to the fixed point's)\n"
        "      --labels            attach the prompt's reference answer, tokenized\n"
        "      --full-window       feed the whole window at every iteration, as the\n"
        "                          reference does, instead of only the rows after its\n"
        "                          final part (about twice the work)\n"
        "      --field NAME        prompt text field of JSONL objects and prompt records\n"
        "                          [text, prompt, question: the first present]\n"
        "      --answer-field NAME reference answer field [answer]\n"
        "      --template T        gsm8k, raw, chat, or a string with {field} placeholders\n"
        "      --chat              wrap each prompt in the model's chat template\n"
        "      --lines             read FILE as text lines, one prompt per line\n"
        "      --shard I/N         only prompts whose index modulo N is I\n"
        "      --seed S            seed of the random draws [0]\n"
        "  -t, --threads N         CPU threads [1]\n"
        "      --device auto|cuda|cpu  compute device: auto is CUDA when this build has it\n"
        "                          and a device is present, else the CPU [auto]\n"
        "  -q, --quiet             no progress line\n"
        "      --progress          a progress line on standard error even when it is\n"
        "                          not a terminal\n"
        "  -h, --help              show this help and exit\n"
        "  -V, --version           show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted.\n"
        "See cllm-traj(1), cllm-stream(5).\n");
}

static void progress(void *ctx, const cllm_traj_stats *s) {
    (void)ctx;
    double it = s->iterations ? (double)s->iterations : 1.0, ticks = s->ticks ? (double)s->ticks : 1.0;
    fprintf(stderr, "\r%s: %llu prompts, %llu records, %llu tokens, %.2f tokens and %.1f rows/iteration, "
            "%.2f calls/tick ", cllm_cli_prog(), (unsigned long long)s->prompts, (unsigned long long)s->records,
            (unsigned long long)s->tokens, (double)s->tokens / it, (double)s->rows / it, (double)s->calls / ticks);
    fflush(stderr);
}

enum { OPT_MAX_NEW = 256, OPT_BATCH, OPT_BATCH_INVARIANT, OPT_INIT, OPT_AUG, OPT_LABELS, OPT_FULL_WINDOW, OPT_SEED,
       OPT_DEVICE, OPT_PROGRESS };

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "model", required_argument, 0, 'm' },     { "output", required_argument, 0, 'o' },
        { "force", no_argument, 0, 'f' },           { "block", required_argument, 0, 'n' },
        { "max-new-tokens", required_argument, 0, OPT_MAX_NEW },
        { "batch", required_argument, 0, OPT_BATCH },
        { "batch-invariant", no_argument, 0, OPT_BATCH_INVARIANT },
        { "init", required_argument, 0, OPT_INIT }, { "aug", no_argument, 0, OPT_AUG },
        { "labels", no_argument, 0, OPT_LABELS },   { "full-window", no_argument, 0, OPT_FULL_WINDOW },
        { "seed", required_argument, 0, OPT_SEED }, { "threads", required_argument, 0, 't' },
        CLLM_PROMPT_LONGOPTS,
        { "device", required_argument, 0, OPT_DEVICE },
        { "quiet", no_argument, 0, 'q' },           { "progress", no_argument, 0, OPT_PROGRESS },
        { "help", no_argument, 0, 'h' },            { "version", no_argument, 0, 'V' },
        { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_traj_opts o;
    cllm_traj_opts_init(&o);
    o.argc = argc;
    o.argv = argv;
    cllm_prompt_opts po = { 0 };
    const char *model_path = NULL;
    long long v, threads = 1;
    int device = CLLM_CLI_DEVICE_AUTO;
    int show_progress = -1;   /* -1: when stderr is a terminal */
    int c;
    while ((c = getopt_long(argc, argv, "m:o:fn:t:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'o': o.output = optarg; break;
        case 'f': o.force = 1; break;
        case 'n': if (cllm_cli_int("--block", optarg, 1, 1024, &v)) return CLLM_EXIT_USAGE; o.n = (int)v; break;
        case OPT_MAX_NEW:
            if (cllm_cli_int("--max-new-tokens", optarg, 1, 1 << 20, &v)) return CLLM_EXIT_USAGE;
            o.max_new_tokens = (int)v;
            break;
        case OPT_BATCH: if (cllm_cli_int("--batch", optarg, 1, 4096, &v)) return CLLM_EXIT_USAGE; o.batch = (int)v; break;
        case OPT_BATCH_INVARIANT: o.batch_invariant = 1; break;
        case OPT_INIT:
            if (!strcmp(optarg, "prompt")) o.init = CLLM_TRAJ_INIT_PROMPT;
            else if (!strcmp(optarg, "vocab")) o.init = CLLM_TRAJ_INIT_VOCAB;
            else if (!strcmp(optarg, "pad")) o.init = CLLM_TRAJ_INIT_PAD;
            else return cllm_cli_usage_error("--init: '%s' is not prompt, vocab or pad", optarg);
            break;
        case OPT_AUG: o.aug = 1; break;
        case OPT_LABELS: o.labels = 1; break;
        case OPT_FULL_WINDOW: o.full_windows = 1; break;
        case OPT_SEED:
            if (cllm_cli_int("--seed", optarg, 0, INT64_MAX, &v)) return CLLM_EXIT_USAGE;
            o.seed = (uint64_t)v;
            break;
        case 't': if (cllm_cli_int("--threads", optarg, 1, 1024, &threads)) return CLLM_EXIT_USAGE; break;
        case OPT_DEVICE: if ((v = cllm_cli_device(optarg, &device))) return (int)v; break;
        case 'q': show_progress = 0; break;
        case OPT_PROGRESS: show_progress = 1; break;
        case 'h': usage(stdout); return cllm_cli_finish(CLLM_EXIT_OK);
        case 'V': cllm_cli_version(); return cllm_cli_finish(CLLM_EXIT_OK);
        default: if ((v = cllm_prompt_opt(&po, c, optarg))) return (int)v; break;
        }
    }
    if (!model_path) return cllm_cli_usage_error("no model given (-m MODEL)");
    if (argc - optind > 1) return cllm_cli_usage_error("one input file at most");
    if (show_progress < 0) show_progress = isatty(STDERR_FILENO);
    if (show_progress) o.on_progress = progress;

    cllm_model m;
    cllm_prompts *src;
    int status = cllm_cli_start(model_path, &device, (int)threads, &m, optind < argc ? argv[optind] : NULL, &po, &src);
    o.device = device;
    if (!status) {
        cllm_traj_stats st;
        int rc = cllm_traj_run(&m, src, &o, &st);
        if (show_progress) {
            progress(NULL, &st);
            fputc('\n', stderr);
        }
        status = cllm_cli_status(rc);
        cllm_prompts_close(src);
        cllm_model_free(&m);
    }
    return cllm_cli_finish(status);
}
