/* cllm-cat: concatenate, convert, count and validate record streams. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cat.h"
#include "cli.h"
#include "stream.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-cat [OPTION]... [FILE]...\n"
        "Concatenate cllm record streams (zstd + msgpack) into one stream, or show,\n"
        "count or validate them. With no FILE, or when FILE is -, read standard input.\n"
        "\n"
        "Options:\n"
        "  -o, --output FILE     write to FILE instead of standard output\n"
        "  -f, --force           write a binary stream even to a terminal\n"
        "  -j, --jsonl           write one JSON object per record (type included)\n"
        "  -J, --from-jsonl      inputs are JSONL; objects with a \"type\" become that\n"
        "                        record, others become prompt records with their fields\n"
        "      --field NAME      prompt text field of JSONL objects [text, prompt, question]\n"
        "  -c, --count           print the number of records of each type\n"
        "  -C, --check           validate every record against its schema and check\n"
        "                        that each stream is whole; exit 0 only if all are\n"
        "  -n, --head N          pass on the first N data records only\n"
        "      --type TYPE       pass on records of TYPE only (repeatable)\n"
        "  -l, --level N         zstd compression level [3]\n"
        "      --max-record SIZE largest record accepted, in bytes [%u]\n"
        "      --max-window SIZE largest zstd window accepted (decoder memory), in bytes,\n"
        "                        a power of two up to 2^31 [134217728]\n"
        "  -q, --quiet           no messages but errors\n"
        "  -h, --help            show this help and exit\n"
        "  -V, --version         show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 bad or truncated input or an I/O error, 2 usage error,\n"
        "130/143 interrupted.\n"
        "See cllm-cat(1) and cllm-stream(5).\n", CLLM_STREAM_MAX_RECORD_DEFAULT);
}

enum { OPT_FIELD = 256, OPT_MAX_RECORD, OPT_MAX_WINDOW, OPT_TYPE };

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "output", required_argument, 0, 'o' }, { "force", no_argument, 0, 'f' },
        { "jsonl", no_argument, 0, 'j' },        { "from-jsonl", no_argument, 0, 'J' },
        { "field", required_argument, 0, OPT_FIELD },
        { "count", no_argument, 0, 'c' },        { "check", no_argument, 0, 'C' },
        { "head", required_argument, 0, 'n' },   { "type", required_argument, 0, OPT_TYPE },
        { "level", required_argument, 0, 'l' },  { "max-record", required_argument, 0, OPT_MAX_RECORD },
        { "max-window", required_argument, 0, OPT_MAX_WINDOW },
        { "quiet", no_argument, 0, 'q' },        { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' },      { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_cat_opts o = { .mode = CLLM_CAT_STREAM, .level = 3, .head = -1,
                        .max_record = CLLM_STREAM_MAX_RECORD_DEFAULT, .argc = argc, .argv = argv };
    enum { MAX_TYPES = 64 };
    const char *types[MAX_TYPES + 1] = { 0 };
    int n_types = 0, modes = 0, c;
    long long v;
    while ((c = getopt_long(argc, argv, "o:fjJcCn:l:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': o.output = optarg; break;
        case 'f': o.force = 1; break;
        case 'j': o.mode = CLLM_CAT_JSONL; modes++; break;
        case 'J': o.from_jsonl = 1; break;
        case OPT_FIELD: o.field = optarg; break;
        case 'c': o.mode = CLLM_CAT_COUNT; modes++; break;
        case 'C': o.mode = CLLM_CAT_CHECK; modes++; break;
        case 'n': if (cllm_cli_int("--head", optarg, 0, INT64_MAX, &v)) return CLLM_EXIT_USAGE; o.head = v; break;
        case OPT_TYPE: /* long only: -t means --threads in every other cllm program */
            if (n_types == MAX_TYPES) return cllm_cli_usage_error("more than %d --type options", MAX_TYPES);
            types[n_types++] = optarg;
            break;
        case 'l': if (cllm_cli_int("--level", optarg, 1, 19, &v)) return CLLM_EXIT_USAGE; o.level = (int)v; break;
        case OPT_MAX_RECORD:
            if (cllm_cli_int("--max-record", optarg, 1024, (long long)1 << 40, &v)) return CLLM_EXIT_USAGE;
            o.max_record = (size_t)v;
            break;
        case OPT_MAX_WINDOW:
            if (cllm_cli_int("--max-window", optarg, 1024, (long long)1 << 31, &v)) return CLLM_EXIT_USAGE;
            if (v & (v - 1)) return cllm_cli_usage_error("option --max-window: %lld is not a power of two", v);
            o.max_window = (size_t)v;
            break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return cllm_cli_finish(CLLM_EXIT_OK);
        case 'V': cllm_cli_version(); return cllm_cli_finish(CLLM_EXIT_OK);
        default: return cllm_cli_usage_error(NULL);
        }
    }
    if (modes > 1) return cllm_cli_usage_error("choose one of --jsonl, --count and --check");
    if (o.mode == CLLM_CAT_CHECK && (n_types || o.head >= 0))
        return cllm_cli_usage_error("--check validates every record; --type and --head do not apply");
    if (o.mode != CLLM_CAT_STREAM && o.output)
        return cllm_cli_usage_error("--output applies to stream output only");
    o.types = n_types ? types : NULL;
    return cllm_cli_finish(cllm_cat_run(&o, argv + optind, argc - optind));
}
