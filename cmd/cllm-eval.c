/* cllm-eval: what Jacobi decoding gained: tokens/step, fast-forwarded and
 * stationary tokens, speedup, agreement and accuracy from gen records. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "eval.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-eval [OPTION]... [FILE]\n"
        "Measure the gen records of FILE (a stream; standard input when none or -): tokens\n"
        "per forward pass, passes per block, fast-forwarded and stationary tokens (traced\n"
        "records), tokens/s, and with a baseline the speedup and agreement, with a task the\n"
        "accuracy. Writes metric records to standard output and a table to standard error.\n"
        "\n"
        "Options:\n"
        "      --baseline FILE     gen records of the same prompts to compare with (e.g. AR)\n"
        "      --task gsm8k|none   score answers: the number after the last ####, else the\n"
        "                          last number, against the reference's; none: no scoring\n"
        "      --ref FILE          reference answers: JSONL or a stream of prompt/gen records,\n"
        "                          matched by id [the gen records' own answer field]\n"
        "      --answer-field NAME field of the --ref answers (needs --ref) [target when\n"
        "                          present, else answer]\n"
        "      --show ID           draw prompt ID's Jacobi trajectory on standard output, one\n"
        "                          line per pass (instead of the metrics and the table)\n"
        "      --color WHEN        colour the drawing: auto, always, never [auto]\n"
        "                          (--colour is the same)\n"
        "  -m, --model MODEL       tokenizer for token text (.gguf or HF directory) [ids]\n"
        "      --html FILE         write a self-contained HTML report with plots\n"
        "  -o, --output FILE       write the metric records to FILE\n"
        "  -f, --force             write the metric stream even to a terminal\n"
        "      --summary           overall numbers only (no per-prompt rows or records)\n"
        "  -q, --quiet             no table on standard error\n"
        "  -h, --help              show this help and exit\n"
        "  -V, --version           show the version and exit\n"
        "\n"
        "When standard output is a terminal and neither -o nor -f is given, no metric\n"
        "stream is written (the table is the output).\n"
        "Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted.\n"
        "See cllm-eval(1), cllm-gen(1), cllm-stream(5).\n");
}

enum { OPT_BASELINE = 256, OPT_TASK, OPT_REF, OPT_ANSWER_FIELD, OPT_SHOW, OPT_COLOR, OPT_HTML, OPT_SUMMARY };

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "baseline", required_argument, 0, OPT_BASELINE }, { "task", required_argument, 0, OPT_TASK },
        { "ref", required_argument, 0, OPT_REF },           { "answer-field", required_argument, 0, OPT_ANSWER_FIELD },
        { "show", required_argument, 0, OPT_SHOW },         { "color", required_argument, 0, OPT_COLOR },
        { "colour", required_argument, 0, OPT_COLOR },      { "model", required_argument, 0, 'm' },
        { "html", required_argument, 0, OPT_HTML },         { "output", required_argument, 0, 'o' },
        { "force", no_argument, 0, 'f' },                   { "summary", no_argument, 0, OPT_SUMMARY },
        { "quiet", no_argument, 0, 'q' },                   { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' },                 { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_eval_opts o;
    memset(&o, 0, sizeof o);
    o.argc = argc;
    o.argv = argv;
    o.table = stderr;
    o.show_out = stdout;
    const char *model = NULL;
    int color = -1, quiet = 0;
    long long v;
    int c;
    while ((c = getopt_long(argc, argv, "m:o:fqhV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BASELINE: o.baseline = optarg; break;
        case OPT_TASK:
            if (!strcmp(optarg, "gsm8k")) o.task = CLLM_TASK_GSM8K;
            else if (!strcmp(optarg, "none")) o.task = CLLM_TASK_NONE;
            else return cllm_cli_usage_error("--task: '%s' is not gsm8k or none", optarg);
            break;
        case OPT_REF: o.ref = optarg; break;
        case OPT_ANSWER_FIELD: o.answer_field = optarg; break;
        case OPT_SHOW:
            if (cllm_cli_int("--show", optarg, 0, INT64_MAX, &v)) return CLLM_EXIT_USAGE;
            o.show = 1;
            o.show_id = v;
            break;
        case OPT_COLOR:
            if (!strcmp(optarg, "always")) color = 1;
            else if (!strcmp(optarg, "never")) color = 0;
            else if (!strcmp(optarg, "auto")) color = -1;
            else return cllm_cli_usage_error("--color: '%s' is not auto, always or never", optarg);
            break;
        case 'm': model = optarg; break;
        case OPT_HTML: o.html = optarg; break;
        case 'o': o.output = optarg; break;
        case 'f': o.force = 1; break;
        case OPT_SUMMARY: o.summary = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return cllm_cli_finish(CLLM_EXIT_OK);
        case 'V': cllm_cli_version(); return cllm_cli_finish(CLLM_EXIT_OK);
        default: return cllm_cli_usage_error(NULL);
        }
    }
    if (argc - optind > 1) return cllm_cli_usage_error("one input file at most");
    o.input = optind < argc ? argv[optind] : NULL;
    if (o.ref && o.task == CLLM_TASK_NONE) return cllm_cli_usage_error("--ref needs --task");
    /* without --ref the reference is each gen record's own answer: the option
     * would change nothing, and a user who gave it meant something else */
    if (o.answer_field && !o.ref) return cllm_cli_usage_error("--answer-field names a field of the --ref answers: it needs --ref");
    struct stat sb, si;   /* the same file under another name (./x, a link) too */
    if (o.baseline && o.input && strcmp(o.input, "-") && strcmp(o.baseline, "-") &&
        (!strcmp(o.baseline, o.input) || (!stat(o.baseline, &sb) && !stat(o.input, &si) && S_ISREG(sb.st_mode) &&
                                          sb.st_dev == si.st_dev && sb.st_ino == si.st_ino)))
        return cllm_cli_usage_error("--baseline is the input itself");
    int stdin_uses = (!o.input || !strcmp(o.input, "-")) + (o.baseline && !strcmp(o.baseline, "-")) +
                     (o.ref && !strcmp(o.ref, "-"));
    if (stdin_uses > 1) return cllm_cli_usage_error("standard input can feed one input only");
    if (o.show && (o.output || o.force)) return cllm_cli_usage_error("--show draws on standard output; drop -o/-f");
    if (quiet) o.table = NULL;
    o.color = color >= 0 ? color : isatty(STDOUT_FILENO);
    if (!o.output && !o.force && isatty(STDOUT_FILENO)) o.no_stream = 1;

    cllm_tokenizer *tok = NULL;
    if (model && cllm_eval_load_tokenizer(model, &tok)) return cllm_cli_finish(cllm_cli_fail());
    o.tok = tok;
    int status = 0;
    status = cllm_cli_status(cllm_eval_run(&o));
    cllm_tokenizer_free(tok);
    return cllm_cli_finish(status);
}
