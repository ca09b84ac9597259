/* cllm-train: consistency (CLLM) or supervised fine-tuning on the CPU or a CUDA device. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dist.h"
#include "err.h"
#include "forward.h"
#include "model.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
        "Usage: cllm-train -m BASE -o OUT [OPTION]... [FILE]\n"
        "Fine-tune BASE into OUT (a .gguf file or a HF safetensors directory, by its\n"
        "name): consistency training on the traj records of FILE (--objective cllm), or\n"
        "supervised fine-tuning on prompts with answers (--objective sft: prompt records,\n"
        "or JSONL with --field/--answer-field). Standard input when no FILE or -.\n"
        "Writes metric records (loss, consistency, ar, lr, grad_norm, tokens_per_s,\n"
        "examples_per_s) to standard output.\n"
        "\n"
        "Options:\n"
        "  -m, --model FILE          base model: a .gguf file or a HF directory\n"
        "  -o, --output PATH         trained model: PATH.gguf, or a HF directory\n"
        "      --dtype f32|f16|bf16  weights of the output [f32]\n"
        "      --objective cllm|sft  consistency + AR loss, or plain cross-entropy [cllm]\n"
        "      --loss global|local   consistency loss: to the fixed point, or between\n"
        "                            adjacent Jacobi states [global]\n"
        "      --consistency-mean    average the consistency rows instead of summing them\n"
        "      --separate-passes     the student in a pass of its own, not a fork of the\n"
        "                            AR sequence (the same result, more work; a check)\n"
        "      --ar-weight W         weight of the AR loss [10]\n"
        "      --label-smoothing E   AR label smoothing [0.1 for cllm, 0 for sft]\n"
        "      --use-labels          AR loss on the records' labels, not the fixed points\n"
        "      --lr R                peak learning rate [2e-5]\n"
        "      --warmup F            linear warm-up over this fraction of the steps [0.03]\n"
        "      --weight-decay D      AdamW decoupled weight decay (not on norms) [0]\n"
        "      --clip N              global gradient norm limit, 0 for none [1.0]\n"
        "      --epochs N            passes over the input [1; with --max-steps, as many\n"
        "                            as the steps need]\n"
        "      --max-steps N         optimizer steps; sets the schedule's length (the\n"
        "                            input is read again as often as needed) [from epochs]\n"
        "      --batch N             examples per micro-batch [1]\n"
        "      --grad-accum N        micro-batches per optimizer step [1]\n"
        "      --shuffle-buffer N    examples held for shuffling; 1 keeps input order [1024]\n"
        "      --max-len N           longest sequence accepted [the model's context]\n"
        "      --checkpoint-every N  write a checkpoint every N steps [0: never]\n"
        "      --checkpoint-dir DIR  where checkpoints go [OUT.ckpt]\n"
        "      --keep K              keep the newest K checkpoints, 0 all [3]\n"
        "      --resume CKPT         continue from a checkpoint file, or the newest valid\n"
        "                            one of a directory (same model, options and input)\n"
        "      --seed S              seed of shuffling and state sampling [0]\n"
        "      --field NAME          SFT: prompt text field [text, prompt, question]\n"
        "      --answer-field NAME   SFT: answer field [answer]\n"
        "      --template T          SFT: gsm8k, raw, chat, or a string with {field}\n"
        "      --chat                SFT: wrap each prompt in the model's chat template\n"
        "      --metrics FILE        write the metric stream to FILE, not standard output\n"
        "  -f, --force               write the metric stream even to a terminal\n"
        "  -q, --quiet               no progress on standard error\n"
        "      --progress            a progress line every step, also when standard error\n"
        "                            is not a terminal (else about ten lines a run there)\n"
        "  -t, --threads N           CPU threads [1]\n"
        "      --device auto|cuda|cpu  compute device: auto is CUDA when this build has\n"
        "                            it and a device is present, else the CPU [auto]\n"
        "      --allreduce auto|nccl|mpi  how ranks sum gradients: nccl on the GPUs (also\n"
        "                            with one rank), mpi on the host; auto is nccl on\n"
        "                            CUDA with several ranks, else mpi [auto]\n"
        "      --shard-optimizer     with several ranks each keeps the optimizer state of\n"
        "                            its slice of the weights only (ZeRO-1)\n"
        "  -h, --help                show this help and exit\n"
        "  -V, --version             show the version and exit\n"
        "\n"
        "Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted\n"
        "(after the step in hand, with a checkpoint when checkpointing is on).\n"
        "See cllm-train(1), cllm-traj(1), cllm-stream(5).\n");
}

/* Progress: a line updated in place on a terminal; otherwise a line at the
 * first and last steps and every tenth of the run (every step with --progress). */
typedef struct prog { int on, tty, every_step; } prog;

static void on_step(void *ctx, const cllm_train_progress *p) {
    prog *g = ctx;
    if (p->checkpoint && g->on) fprintf(stderr, "%s%s: checkpoint %s\n", g->tty ? "\r\033[K" : "", cllm_cli_prog(), p->checkpoint);
    if (!g->on) return;
    int last = p->step == p->total_steps;
    int64_t every = p->total_steps >= 10 ? p->total_steps / 10 : 1;
    if (!g->tty && !g->every_step && !last && p->step != 1 && p->step % every) return;
    fprintf(stderr, "%s%s: step %lld/%lld loss %.4f", g->tty ? "\r\033[K" : "", cllm_cli_prog(), (long long)p->step,
            (long long)p->total_steps, p->loss);
    if (p->consistency != 0) fprintf(stderr, " (consistency %.4f ar %.4f)", p->consistency, p->ar);
    fprintf(stderr, " lr %.3g grad %.3g %.0f tok/s%s", p->lr, p->grad_norm, p->tokens_per_s, g->tty && !last ? "" : "\n");
    fflush(stderr);
}

enum { OPT_OBJECTIVE = 256, OPT_LOSS, OPT_CMEAN, OPT_ARW, OPT_LS, OPT_LABELS, OPT_LR, OPT_WARMUP, OPT_WD, OPT_CLIP,
       OPT_EPOCHS, OPT_MAXSTEPS, OPT_BATCH, OPT_ACCUM, OPT_SHUFFLE, OPT_MAXLEN, OPT_CKEVERY, OPT_CKDIR, OPT_KEEP,
       OPT_RESUME, OPT_SEED, OPT_FIELD, OPT_ANSWER, OPT_TEMPLATE, OPT_CHAT, OPT_METRICS, OPT_PROGRESS, OPT_DEVICE,
       OPT_DTYPE, OPT_ALLREDUCE, OPT_SEPARATE, OPT_SHARD };

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        { "model", required_argument, 0, 'm' },           { "output", required_argument, 0, 'o' },
        { "dtype", required_argument, 0, OPT_DTYPE },      { "objective", required_argument, 0, OPT_OBJECTIVE },
        { "loss", required_argument, 0, OPT_LOSS },        { "consistency-mean", no_argument, 0, OPT_CMEAN },
        { "separate-passes", no_argument, 0, OPT_SEPARATE },
        { "ar-weight", required_argument, 0, OPT_ARW },    { "label-smoothing", required_argument, 0, OPT_LS },
        { "use-labels", no_argument, 0, OPT_LABELS },      { "lr", required_argument, 0, OPT_LR },
        { "warmup", required_argument, 0, OPT_WARMUP },    { "weight-decay", required_argument, 0, OPT_WD },
        { "clip", required_argument, 0, OPT_CLIP },        { "epochs", required_argument, 0, OPT_EPOCHS },
        { "max-steps", required_argument, 0, OPT_MAXSTEPS }, { "batch", required_argument, 0, OPT_BATCH },
        { "grad-accum", required_argument, 0, OPT_ACCUM }, { "shuffle-buffer", required_argument, 0, OPT_SHUFFLE },
        { "max-len", required_argument, 0, OPT_MAXLEN },   { "checkpoint-every", required_argument, 0, OPT_CKEVERY },
        { "checkpoint-dir", required_argument, 0, OPT_CKDIR }, { "keep", required_argument, 0, OPT_KEEP },
        { "resume", required_argument, 0, OPT_RESUME },    { "seed", required_argument, 0, OPT_SEED },
        { "field", required_argument, 0, OPT_FIELD },      { "answer-field", required_argument, 0, OPT_ANSWER },
        { "template", required_argument, 0, OPT_TEMPLATE }, { "chat", no_argument, 0, OPT_CHAT },
        { "metrics", required_argument, 0, OPT_METRICS },  { "force", no_argument, 0, 'f' },
        { "quiet", no_argument, 0, 'q' },                  { "progress", no_argument, 0, OPT_PROGRESS },
        { "threads", required_argument, 0, 't' },          { "device", required_argument, 0, OPT_DEVICE },
        { "allreduce", required_argument, 0, OPT_ALLREDUCE }, { "shard-optimizer", no_argument, 0, OPT_SHARD },
        { "help", no_argument, 0, 'h' },                   { "version", no_argument, 0, 'V' },
        { 0, 0, 0, 0 },
    };
    cllm_cli_init(argv);
    cllm_train_opts o;
    cllm_train_opts_init(&o);
    o.argc = argc;
    o.argv = argv;
    const char *model_path = NULL;
    long long v, threads = 1;
    int quiet = 0, progress = 0, c, device = CLLM_CLI_DEVICE_AUTO;
    while ((c = getopt_long(argc, argv, "m:o:fqt:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'o': o.output = optarg; break;
        case OPT_DTYPE:
            if (strcmp(optarg, "f32") && strcmp(optarg, "f16") && strcmp(optarg, "bf16"))
                return cllm_cli_usage_error("--dtype: '%s' is not f32, f16 or bf16", optarg);
            o.dtype = optarg;
            break;
        case OPT_OBJECTIVE:
            if (!strcmp(optarg, "cllm")) o.objective = CLLM_OBJ_CLLM;
            else if (!strcmp(optarg, "sft")) o.objective = CLLM_OBJ_SFT;
            else return cllm_cli_usage_error("--objective: '%s' is not cllm or sft", optarg);
            break;
        case OPT_LOSS:
            if (!strcmp(optarg, "global")) o.loss = CLLM_CONS_GLOBAL;
            else if (!strcmp(optarg, "local")) o.loss = CLLM_CONS_LOCAL;
            else return cllm_cli_usage_error("--loss: '%s' is not global or local", optarg);
            break;
        case OPT_CMEAN: o.cons_mean = 1; break;
        case OPT_SEPARATE: o.separate_passes = 1; break;
        case OPT_ARW: if (cllm_cli_double("--ar-weight", optarg, 0, 1e6, &o.ar_weight)) return CLLM_EXIT_USAGE; break;
        case OPT_LS: if (cllm_cli_double("--label-smoothing", optarg, 0, 0.999, &o.label_smoothing)) return CLLM_EXIT_USAGE; break;
        case OPT_LABELS: o.use_labels = 1; break;
        case OPT_LR: if (cllm_cli_double("--lr", optarg, 0, 10, &o.lr)) return CLLM_EXIT_USAGE; break;
        case OPT_WARMUP: if (cllm_cli_double("--warmup", optarg, 0, 1, &o.warmup)) return CLLM_EXIT_USAGE; break;
        case OPT_WD: if (cllm_cli_double("--weight-decay", optarg, 0, 10, &o.weight_decay)) return CLLM_EXIT_USAGE; break;
        case OPT_CLIP: if (cllm_cli_double("--clip", optarg, 0, 1e9, &o.clip)) return CLLM_EXIT_USAGE; break;
        case OPT_EPOCHS: if (cllm_cli_int("--epochs", optarg, 1, 1000000, &v)) return CLLM_EXIT_USAGE; o.epochs = (int)v; break;
        case OPT_MAXSTEPS: if (cllm_cli_int("--max-steps", optarg, 1, INT64_MAX / 2, &v)) return CLLM_EXIT_USAGE; o.max_steps = v; break;
        case OPT_BATCH: if (cllm_cli_int("--batch", optarg, 1, 4096, &v)) return CLLM_EXIT_USAGE; o.batch = (int)v; break;
        case OPT_ACCUM: if (cllm_cli_int("--grad-accum", optarg, 1, 65536, &v)) return CLLM_EXIT_USAGE; o.grad_accum = (int)v; break;
        case OPT_SHUFFLE: if (cllm_cli_int("--shuffle-buffer", optarg, 1, 1 << 24, &v)) return CLLM_EXIT_USAGE; o.shuffle_buffer = (int)v; break;
        case OPT_MAXLEN: if (cllm_cli_int("--max-len", optarg, 2, 1 << 24, &v)) return CLLM_EXIT_USAGE; o.max_len = (int)v; break;
        case OPT_CKEVERY: if (cllm_cli_int("--checkpoint-every", optarg, 0, INT64_MAX / 2, &v)) return CLLM_EXIT_USAGE; o.checkpoint_every = v; break;
        case OPT_CKDIR: o.checkpoint_dir = optarg; break;
        case OPT_KEEP: if (cllm_cli_int("--keep", optarg, 0, 1000000, &v)) return CLLM_EXIT_USAGE; o.keep = (int)v; break;
        case OPT_RESUME: o.resume = optarg; break;
        case OPT_SEED: if (cllm_cli_int("--seed", optarg, 0, INT64_MAX, &v)) return CLLM_EXIT_USAGE; o.seed = (uint64_t)v; break;
        case OPT_FIELD: o.prompt.field = optarg; break;
        case OPT_ANSWER: o.prompt.answer_field = optarg; break;
        case OPT_TEMPLATE:
            if (cllm_template_check(optarg)) return cllm_cli_usage_error("--template: %s", cllm_errmsg());
            o.prompt.template = optarg;
            break;
        case OPT_CHAT: o.prompt.chat = 1; break;
        case OPT_METRICS: o.metrics = optarg; break;
        case 'f': o.force = 1; break;
        case 'q': quiet = 1; progress = 0; break;              /* the last of -q and --progress counts */
        case OPT_PROGRESS: progress = 1; quiet = 0; break;
        case 't': if (cllm_cli_int("--threads", optarg, 1, 1024, &threads)) return CLLM_EXIT_USAGE; break;
        case OPT_DEVICE: if ((v = cllm_cli_device(optarg, &device))) return (int)v; break;
        case OPT_ALLREDUCE:
            if (!strcmp(optarg, "auto")) o.allreduce = CLLM_ALLREDUCE_AUTO;
            else if (!strcmp(optarg, "nccl")) o.allreduce = CLLM_ALLREDUCE_NCCL;
            else if (!strcmp(optarg, "mpi")) o.allreduce = CLLM_ALLREDUCE_MPI;
            else return cllm_cli_usage_error("--allreduce: '%s' is not auto, nccl or mpi", optarg);
            break;
        case OPT_SHARD: o.shard_optimizer = 1; break;
        case 'h': usage(stdout); return cllm_cli_finish(CLLM_EXIT_OK);
        case 'V': cllm_cli_version(); return cllm_cli_finish(CLLM_EXIT_OK);
        default: return cllm_cli_usage_error(NULL);
        }
    }
    if (!model_path) return cllm_cli_usage_error("no base model given (-m BASE)");
    if (!o.output || !*o.output) return cllm_cli_usage_error("no output given (-o OUT)");
    if (argc - optind > 1) return cllm_cli_usage_error("one input file at most");
    if (o.use_labels && o.objective == CLLM_OBJ_SFT) return cllm_cli_usage_error("--use-labels is for --objective cllm");
    if (o.objective == CLLM_OBJ_CLLM && (o.prompt.field || o.prompt.answer_field || o.prompt.template || o.prompt.chat))
        return cllm_cli_usage_error("--field, --answer-field, --template and --chat are for --objective sft");
    o.input = optind < argc ? argv[optind] : NULL;
    if ((v = cllm_cli_device_resolve(&device))) return cllm_cli_finish((int)v);

    /* Under mpirun/srun (an MPI build): one rank of a data-parallel run; rank 0
     * alone reports progress and writes the outputs. A failure on any rank
     * ends the whole job (no rank waits forever in a collective call). */
    if (cllm_dist_init()) return cllm_cli_finish(cllm_cli_fail());
    if (cllm_dist_rank() != 0) cllm_set_warn_handler(NULL);   /* every rank reads the same input: rank 0 speaks */
    if (cllm_dist_size() > 1 && cllm_dist_rank() == 0 && !o.metrics && isatty(STDOUT_FILENO)) {
        /* Open MPI hands rank 0 a pseudo-terminal for stdout: it would turn \n into \r\n in the stream. */
        cllm_cli_error("with %d ranks standard output is the launcher's terminal, which alters binary data: "
                       "give --metrics FILE", cllm_dist_size());
        cllm_dist_abort(CLLM_EXIT_USAGE);
    }
    o.device = device;
    prog g = { !quiet && cllm_dist_rank() == 0, isatty(STDERR_FILENO), progress };
    o.on_step = on_step;
    o.cb_ctx = &g;

    cllm_set_threads((int)threads);
    cllm_model m;
    if (cllm_model_load(&m, model_path)) {
        int st = cllm_cli_fail();
        cllm_dist_abort(st);
        return cllm_cli_finish(st);
    }
    int status = 0;
    int rc = cllm_train_run(&m, &o);
    if (rc == CLLM_EINTR) {
        if (!quiet && cllm_dist_rank() == 0) fprintf(stderr, "%s: %s\n", cllm_cli_prog(), cllm_errmsg());
        status = cllm_cli_interrupted_status();
    } else if (rc) {
        status = cllm_cli_fail();
        cllm_dist_abort(status);
    }
    cllm_model_free(&m);
    if (cllm_dist_finalize() && !status) status = cllm_cli_fail();
    return cllm_cli_finish(status);
}
