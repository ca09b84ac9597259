/* cllm-gen: generate with greedy AR or Jacobi decoding. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "err.h"
#include "forward.h"
#include "gen.h"
#include "model.h"
#include "prompts.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-gen -m MODEL [OPTION]... [FILE]\n"
        "Generate an answer to every prompt of FILE (a stream of prompt records, JSONL,\n"
        "or text lines; standard input when none or -) with greedy AR or Jacobi decoding,\n"
        "and write one gen record per prompt.\n"
        "\n"
        "Options:\n"
        "  -m, --model FILE        model: a .gguf file or a HF safetensors directory\n"
        "  -o, --output FILE       write to FILE instead of standard output\n"
        "  -f, --force             write a binary stream even to a terminal\n"
        "      --method ar|jacobi  decoding method [ar]\n"
        "  -n, --block N           Jacobi block size [16]\n"
        "      --max-new-tokens N  stop after N new tokens [256]\n"
        "      --init prompt|pad|last  Jacobi initial guess: random prompt tokens, the pad\n"
        "                          token, or the previous block's output [prompt]\n"
        "      --trace             record every Jacobi iteration (states, accepted)\n"
        "      --text              print plain text as it is decoded, one answer per line\n"
        "      --batch B           prompts decoded at once, one forward pass per step for\n"
        "                          all of them (continuous batching); outputs keep the\n"
        "                          input order and, on the CPU, do not depend on B [1]\n"
        "      --field NAME        prompt text field of JSONL objects and prompt records\n"
        "                          [text, prompt, question: the first present]\n"
        "      --answer-field NAME reference answer field [answer]\n"
        "      --template T        gsm8k, raw, chat, or a string with {field} placeholders\n"
        "      --chat              wrap each prompt in the model's chat template\n"
        "      --lines             read FILE as text lines, one prompt per line\n"
        "      --shard I/N         only prompts whose index modulo N is I\n"
        "      --seed S            seed of the initial guesses [0]\n"
        "  -t, --threads N         CPU threads [1]\n"
        "      --device auto|cuda|cpu  compute device: auto is CUDA when this build has it\n"
        "                          and a device is present, else the CPU [auto]\n"
        "  -h, --help              show this help and exit\n"
        "  -V, --version           show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted.\n"
        "See cllm-gen(1), cllm-stream(5).\n");
}

enum { OPT_METHOD = 256, OPT_TRACE, OPT_TEXT, OPT_DEVICE, OPT_BATCH };

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "model", required_argument, 0, 'm' },     { "output", required_argument, 0, 'o' },
        { "force", no_argument, 0, 'f' },           { "method", required_argument, 0, OPT_METHOD },
        { "trace", no_argument, 0, OPT_TRACE },     { "text", no_argument, 0, OPT_TEXT },
        { "threads", required_argument, 0, 't' },
        CLLM_DECODE_LONGOPTS,
        CLLM_PROMPT_LONGOPTS,
        { "device", required_argument, 0, OPT_DEVICE }, { "batch", required_argument, 0, OPT_BATCH },
        { "help", no_argument, 0, 'h' },            { "version", no_argument, 0, 'V' },
        { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_gen_opts o;
    memset(&o, 0, sizeof o);
    cllm_decode_opts_init(&o.dec);
    o.argc = argc;
    o.argv = argv;
    cllm_prompt_opts po = { 0 };
    const char *model_path = NULL;
    long long v, threads = 1;
    int device = CLLM_CLI_DEVICE_AUTO;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:fn:t:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'o': o.output = optarg; break;
        case 'f': o.force = 1; break;
        case OPT_METHOD:
            if (!strcmp(optarg, "ar")) o.dec.method = CLLM_DECODE_AR;
            else if (!strcmp(optarg, "jacobi")) o.dec.method = CLLM_DECODE_JACOBI;
            else return cllm_cli_usage_error("--method: '%s' is not ar or jacobi", optarg);
            break;
        case OPT_TRACE: o.dec.trace = 1; break;
        case OPT_TEXT: o.text = 1; break;
        case OPT_BATCH: if (cllm_cli_int("--batch", optarg, 1, 4096, &v)) return CLLM_EXIT_USAGE; o.batch = (int)v; break;
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
    if (!model_path) return cllm_cli_usage_error("no model given (-m MODEL)");
    if (argc - optind > 1) return cllm_cli_usage_error("one input file at most");
    if (o.text && o.output) return cllm_cli_usage_error("--text writes to standard output; drop --output");
    if (o.text && o.dec.trace) return cllm_cli_usage_error("--trace needs stream output; drop --text");

    cllm_model m;
    cllm_prompts *src;
    int status = cllm_cli_start(model_path, &device, (int)threads, &m, optind < argc ? argv[optind] : NULL, &po, &src);
    o.device = device;
    if (!status) {
        status = cllm_cli_status(cllm_gen_run(&m, src, &o));
        cllm_prompts_close(src);
        cllm_model_free(&m);
    }
    return cllm_cli_finish(status);
}
