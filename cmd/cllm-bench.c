/* cllm-bench: AR against Jacobi decoding (and a second model) on one machine in one run. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "err.h"
#include "forward.h"
#include "gen.h"
#include "model.h"
#include "prompts.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-bench -m MODEL [--vs MODEL2] [OPTION]... [FILE]\n"
        "Decode the prompts of FILE (a stream of prompt records, JSONL, or text lines;\n"
        "standard input when none or -) with greedy AR and Jacobi decoding, batch 1, after\n"
        "a warm-up, timing every prompt --repeat times (medians), and print a table of\n"
        "tokens/s, tokens/step, time per forward pass and speedup on standard error and\n"
        "metric records on standard output.\n"
        "\n"
        "Options:\n"
        "  -m, --model FILE        model: a .gguf file or a HF safetensors directory\n"
        "      --vs FILE           a second model in the same run (e.g. the CLLM against\n"
        "                          its base); same tokenizer\n"
        "  -n, --block N           Jacobi block size [16]\n"
        "      --max-new-tokens N  stop after N new tokens [256]\n"
        "      --prompts N         the first N prompts only [all]\n"
        "      --repeat R          timed decodes per prompt and method (median) [3]\n"
        "      --warmup W          untimed decodes of the first prompt per model/method [1]\n"
        "      --init prompt|pad|last  Jacobi initial guess [prompt]\n"
        "      --seed S            seed of the initial guesses [0]\n"
        "      --field NAME        prompt text field of JSONL objects and prompt records\n"
        "      --answer-field NAME reference answer field [answer]\n"
        "      --template T        gsm8k, raw, chat, or a string with {field} placeholders\n"
        "      --chat              wrap each prompt in the model's chat template\n"
        "      --lines             read FILE as text lines, one prompt per line\n"
        "      --shard I/N         only prompts whose index modulo N is I\n"
        "  -o, --output FILE       write the metric records to FILE\n"
        "  -f, --force             write the metric stream even to a terminal\n"
        "  -q, --quiet             no table, no progress\n"
        "  -t, --threads N         CPU threads [1]\n"
        "      --device auto|cuda|cpu  compute device: auto is CUDA when this build has it\n"
        "                          and a device is present, else the CPU [auto]\n"
        "  -h, --help              show this help and exit\n"
        "  -V, --version           show the version and exit\n"
        "\n"
        "When standard output is a terminal and neither -o nor -f is given, no metric\n"
        "stream is written (the table is the output).\n"
        "Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted.\n"
        "See cllm-bench(1), cllm-eval(1), cllm-gen(1).\n");
}

enum { OPT_VS = 256, OPT_PROMPTS, OPT_REPEAT, OPT_WARMUP, OPT_DEVICE };

static const char *base_name(const char *p) {
    size_t l = strlen(p);
    while (l > 1 && p[l - 1] == '/') l--;
    const char *s = p + l;
    while (s > p && s[-1] != '/') s--;
    return s;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "model", required_argument, 0, 'm' },         { "vs", required_argument, 0, OPT_VS },
        { "prompts", required_argument, 0, OPT_PROMPTS }, { "repeat", required_argument, 0, OPT_REPEAT },
        { "warmup", required_argument, 0, OPT_WARMUP }, { "output", required_argument, 0, 'o' },
        { "force", no_argument, 0, 'f' },               { "quiet", no_argument, 0, 'q' },
        { "threads", required_argument, 0, 't' },       CLLM_DECODE_LONGOPTS,
        CLLM_PROMPT_LONGOPTS,
        { "device", required_argument, 0, OPT_DEVICE },
        { "help", no_argument, 0, 'h' },                { "version", no_argument, 0, 'V' },
        { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_bench_opts o;
    memset(&o, 0, sizeof o);
    cllm_decode_opts_init(&o.dec);
    o.repeat = 3;
    o.warmup = 1;
    o.argc = argc;
    o.argv = argv;
    cllm_prompt_opts po = { 0 };
    const char *paths[2] = { NULL, NULL };
    long long v, threads = 1;
    int device = CLLM_CLI_DEVICE_AUTO;
    int quiet = 0, c;
    while ((c = getopt_long(argc, argv, "m:n:o:fqt:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': paths[0] = optarg; break;
        case OPT_VS: paths[1] = optarg; break;
        case OPT_PROMPTS: if (cllm_cli_int("--prompts", optarg, 1, 1 << 30, &v)) return CLLM_EXIT_USAGE; o.max_prompts = (int)v; break;
        case OPT_REPEAT: if (cllm_cli_int("--repeat", optarg, 1, 1000, &v)) return CLLM_EXIT_USAGE; o.repeat = (int)v; break;
        case OPT_WARMUP: if (cllm_cli_int("--warmup", optarg, 0, 1000, &v)) return CLLM_EXIT_USAGE; o.warmup = (int)v; break;
        case 'o': o.output = optarg; break;
        case 'f': o.force = 1; break;
        case 'q': quiet = 1; break;
        case 't': if (cllm_cli_int("--threads", optarg, 1, 1024, &threads)) return CLLM_EXIT_USAGE; break;
        case OPT_DEVICE: if ((v = cllm_cli_device(optarg, &device))) return (int)v; break;
        case 'h': usage(stdout); return cllm_cli_finish(CLLM_EXIT_OK);
        case 'V': cllm_cli_version(); return cllm_cli_finish(CLLM_EXIT_OK);
        default:
            if ((v = cllm_decode_opt(&o.dec, c, optarg)) < 0) v = cllm_prompt_opt(&po, c, optarg);
            if (v) return (int)v;
            break;
        }
    }
    if (!paths[0]) return cllm_cli_usage_error("no model given (-m MODEL)");
    if (argc - optind > 1) return cllm_cli_usage_error("one input file at most");
    if (!quiet) o.table = stderr;
    if (!quiet && isatty(STDERR_FILENO)) o.progress = stderr;
    if (!o.output && !o.force && isatty(STDOUT_FILENO)) o.no_stream = 1;

    if ((v = cllm_cli_device_resolve(&device))) return cllm_cli_finish((int)v);
    cllm_fwd_prepare(device);   /* the device's start beside the model load */
    o.device = device;
    cllm_set_threads((int)threads);
    int nm = paths[1] ? 2 : 1;
    cllm_model m[2];
    const cllm_model *mp[2] = { &m[0], &m[1] };
    const char *names[2] = { base_name(paths[0]), paths[1] ? base_name(paths[1]) : NULL };
    if (names[1] && !strcmp(names[0], names[1])) { names[0] = paths[0]; names[1] = paths[1]; }
    int loaded = 0, status = 0;
    for (; loaded < nm; loaded++)
        if (cllm_model_load(&m[loaded], paths[loaded])) { status = cllm_cli_fail(); break; }
    cllm_prompts *src = NULL;
    /* a signal while the first bytes are awaited: 130/143, no stream */
    if (!status) status = cllm_cli_status(cllm_interrupted ? CLLM_EINTR : cllm_prompts_open(&src, optind < argc ? argv[optind] : NULL, &po, m[0].tok));
    if (!status) status = cllm_cli_status(cllm_bench_run(mp, names, nm, src, &o));
    cllm_prompts_close(src);
    for (int i = 0; i < loaded; i++) cllm_model_free(&m[i]);
    return cllm_cli_finish(status);
}
