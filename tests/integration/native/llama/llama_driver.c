/* llama_driver: the tests' llama.cpp host. It loads a GGUF model through the prebuilt
 * libllama (scripts/install-llama.sh), greedy-decodes a fixed number of tokens from a
 * prompt and prints machine-readable lines, so that a native run and a run under
 * tibet-run can be compared token for token:
 *
 *   load_ms: <milliseconds in llama_model_load_from_file>
 *   first_token_ms: <milliseconds from the start of the load to the first generated token>
 *   prompt_tokens: <ids of the tokenized prompt, BOS included>
 *   tokens: <ids of the generated tokens>
 *   hash: <FNV-1a 64 over the generated ids, each as 4 little-endian bytes, 16 hex digits>
 *   tokens_per_second: <generated tokens / seconds spent sampling and decoding them>
 *
 * Usage: llama_driver --model PATH [--tokens N] [--prompt TEXT] [--threads T]
 *                     [--load mmap|read|direct|auto] [--hold] [--verbose]
 * --load picks llama_model_params.load_mode: mmap = LLAMA_LOAD_MODE_MMAP, read =
 * LLAMA_LOAD_MODE_NONE (weights read into a buffer with fread), direct =
 * LLAMA_LOAD_MODE_DIRECT_IO (open with O_DIRECT and read(2)), auto = LLAMA_LOAD_MODE_AUTO (what
 * llama.cpp's own tools use; mmap on a CPU-only machine).
 * --threads defaults to 1: ggml's threads meet at spinning barriers, and on the tests'
 * 2-vCPU machines two of them stall for whole time slices whenever anything else (such
 * as tibet's fault handler) needs a CPU. The thread count does not change the tokens.
 * Every generated token is decoded, even an end-of-generation one, so a run always
 * yields exactly N tokens. Errors: one line on stderr and exit status 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static int verbose;

static void log_to_stderr_if_verbose(enum ggml_log_level level, const char *text, void *user_data)
{
    (void)level;
    (void)user_data;
    if (verbose)
        fputs(text, stderr);
}

static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("llama_driver: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int parse_positive(const char *option, const char *text)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < 1 || value > 1000000)
        fail("%s wants a positive integer, got '%s'", option, text);
    return (int)value;
}

static enum llama_load_mode parse_load_mode(const char *text)
{
    if (strcmp(text, "mmap") == 0) return LLAMA_LOAD_MODE_MMAP;
    if (strcmp(text, "read") == 0) return LLAMA_LOAD_MODE_NONE;
    if (strcmp(text, "direct") == 0) return LLAMA_LOAD_MODE_DIRECT_IO;
    if (strcmp(text, "auto") == 0) return LLAMA_LOAD_MODE_AUTO;
    fail("--load wants mmap, read, direct or auto, got '%s'", text);
    return LLAMA_LOAD_MODE_AUTO;
}

/* The CPU backends (libggml-cpu-<variant>.so) sit beside libllama itself. */
static const char *backend_dir(void)
{
    Dl_info info;
    if (!dladdr((void *)llama_model_load_from_file, &info) || !info.dli_fname)
        fail("cannot find the directory libllama was loaded from");
    return dirname(strdup(info.dli_fname));
}

static void print_ids(const char *label, const llama_token *ids, int count)
{
    printf("%s:", label);
    for (int i = 0; i < count; i++)
        printf(" %d", ids[i]);
    printf("\n");
}

static uint64_t fnv1a64(const llama_token *ids, int count)
{
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (int i = 0; i < count; i++)
        for (int b = 0; b < 4; b++) {
            hash ^= ((uint32_t)ids[i] >> (8 * b)) & 0xff;
            hash *= 0x100000001b3ULL;
        }
    return hash;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "Hello";
    int n_generate = 32, n_threads = 1, hold = 0;
    enum llama_load_mode load_mode = LLAMA_LOAD_MODE_MMAP;

    for (int i = 1; i < argc; i++) {
        const char *option = argv[i];
        if (strcmp(option, "--verbose") == 0) { verbose = 1; continue; }
        if (strcmp(option, "--hold") == 0) { hold = 1; continue; }
        if (i + 1 >= argc)
            fail("unknown option or missing value: %s", option);
        const char *value = argv[++i];
        if (strcmp(option, "--model") == 0) model_path = value;
        else if (strcmp(option, "--tokens") == 0) n_generate = parse_positive(option, value);
        else if (strcmp(option, "--prompt") == 0) prompt = value;
        else if (strcmp(option, "--threads") == 0) n_threads = parse_positive(option, value);
        else if (strcmp(option, "--load") == 0) load_mode = parse_load_mode(value);
        else fail("unknown option: %s", option);
    }
    if (!model_path)
        fail("usage: llama_driver --model PATH [--tokens N] [--prompt TEXT] [--threads T] [--load mmap|read|auto] [--hold] [--verbose]");

    llama_log_set(log_to_stderr_if_verbose, NULL);
    ggml_backend_load_all_from_path(backend_dir());
    llama_backend_init();

    struct llama_model_params model_params = llama_model_default_params();
    model_params.load_mode = load_mode;
    double load_start = now_ms();
    struct llama_model *model = llama_model_load_from_file(model_path, model_params);
    double load_ms = now_ms() - load_start;
    if (!model)
        fail("llama.cpp could not load the model %s (--verbose shows why)", model_path);

    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int prompt_length = (int)strlen(prompt);
    int n_prompt = -llama_tokenize(vocab, prompt, prompt_length, NULL, 0, true, false);
    llama_token *prompt_ids = malloc(sizeof(llama_token) * (n_prompt > 0 ? n_prompt : 1));
    if (n_prompt <= 0 || llama_tokenize(vocab, prompt, prompt_length, prompt_ids, n_prompt, true, false) != n_prompt)
        fail("cannot tokenize the prompt");

    struct llama_context_params context_params = llama_context_default_params();
    context_params.n_ctx = (uint32_t)(n_prompt + n_generate);
    context_params.n_batch = (uint32_t)n_prompt;
    context_params.n_threads = n_threads;
    context_params.n_threads_batch = n_threads;
    context_params.no_perf = true;
    struct llama_context *context = llama_init_from_model(model, context_params);
    if (!context)
        fail("llama.cpp could not create a context (--verbose shows why)");

    struct llama_sampler *sampler = llama_sampler_init_greedy();
    llama_token *generated = malloc(sizeof(llama_token) * n_generate);
    if (!generated)
        fail("out of memory");

    if (llama_decode(context, llama_batch_get_one(prompt_ids, n_prompt)) != 0)
        fail("llama_decode failed on the prompt");
    double generate_start = now_ms();
    double first_token_ms = generate_start - load_start;
    for (int i = 0; i < n_generate; i++) {
        generated[i] = llama_sampler_sample(sampler, context, -1);
        if (i == 0)
            first_token_ms = now_ms() - load_start;
        if (llama_decode(context, llama_batch_get_one(&generated[i], 1)) != 0)
            fail("llama_decode failed at generated token %d", i);
    }
    double generate_ms = now_ms() - generate_start;

    printf("load_ms: %.1f\n", load_ms);
    printf("first_token_ms: %.1f\n", first_token_ms);
    print_ids("prompt_tokens", prompt_ids, n_prompt);
    print_ids("tokens", generated, n_generate);
    printf("hash: %016" PRIx64 "\n", fnv1a64(generated, n_generate));
    printf("tokens_per_second: %.2f\n", n_generate / (generate_ms / 1e3));

    /* --hold: keep the model loaded until stdin closes, so that a test can inspect the
     * process's memory (and the page cache) while the weights are in use. */
    if (hold) {
        printf("holding\n");
        fflush(stdout);
        while (getchar() != EOF) {}
    }

    llama_sampler_free(sampler);
    llama_free(context);
    llama_model_free(model);
    llama_backend_free();
    free(generated);
    free(prompt_ids);
    return 0;
}
