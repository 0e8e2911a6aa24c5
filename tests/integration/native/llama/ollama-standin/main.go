// Command ollama-standin is the tests' stand-in for Ollama's runner, which cannot be
// had here: a Go-runtime process that hosts llama.cpp through cgo. It loads a GGUF
// model through the prebuilt libllama (scripts/install-llama.sh), greedy-decodes a
// fixed number of tokens and prints the same lines as native/llama/llama_driver.c, so
// that the tests can check that a Go host gets the same tokens natively and under
// tibet-run:
//
//	load_ms, prompt_tokens, tokens, hash (FNV-1a 64 over the ids as 4 little-endian
//	bytes each), tokens_per_second
//
// It takes the driver's options, with the same defaults: --model, --tokens, --prompt,
// --threads, --load mmap|read|auto and --verbose. Errors: one line on stderr and exit
// status 1.
//
// Build (no module downloads: go.mod has no requirements):
//
//	CGO_CFLAGS=-I<llama>/include CGO_LDFLAGS="-L<llama>/lib -Wl,-rpath,<llama>/lib" \
//	GOFLAGS=-mod=mod GOPROXY=off go build -o ollama-standin .
package main

/*
#cgo LDFLAGS: -lllama -lggml
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

static void log_to_stderr_if_verbose(enum ggml_log_level level, const char *text, void *verbose) {
	(void)level;
	if (verbose) fputs(text, stderr);
}

static void set_logging(int verbose) {
	llama_log_set(log_to_stderr_if_verbose, verbose ? (void *)1 : NULL);
}

// The CPU backends (libggml-cpu-<variant>.so) sit beside libllama itself.
static const char *backend_dir(void) {
	Dl_info info;
	if (!dladdr((void *)llama_model_load_from_file, &info) || !info.dli_fname) return NULL;
	return dirname(strdup(info.dli_fname));
}
*/
import "C"

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"time"
	"unsafe"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "ollama-standin: "+format+"\n", args...)
	os.Exit(1)
}

func parseLoadMode(text string) C.enum_llama_load_mode {
	switch text {
	case "mmap":
		return C.LLAMA_LOAD_MODE_MMAP
	case "read":
		return C.LLAMA_LOAD_MODE_NONE
	case "auto":
		return C.LLAMA_LOAD_MODE_AUTO
	}
	fail("--load wants mmap, read or auto, got '%s'", text)
	return C.LLAMA_LOAD_MODE_AUTO
}

// tokenArray is C memory, so that llama_batch never holds a Go pointer.
func tokenArray(count int) []C.llama_token {
	memory := C.malloc(C.size_t(count) * C.size_t(unsafe.Sizeof(C.llama_token(0))))
	if memory == nil {
		fail("out of memory")
	}
	return unsafe.Slice((*C.llama_token)(memory), count)
}

func formatIds(ids []C.llama_token) string {
	var text strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&text, " %d", int32(id))
	}
	return text.String()
}

func fnv1a64(ids []C.llama_token) uint64 {
	hash := fnv.New64a()
	var bytes [4]byte
	for _, id := range ids {
		binary.LittleEndian.PutUint32(bytes[:], uint32(int32(id)))
		hash.Write(bytes[:])
	}
	return hash.Sum64()
}

func main() {
	modelPath := flag.String("model", "", "GGUF model to load")
	nGenerate := flag.Int("tokens", 32, "tokens to generate")
	prompt := flag.String("prompt", "Hello", "prompt text")
	nThreads := flag.Int("threads", 1, "threads for llama.cpp (see llama_driver.c for why 1)")
	load := flag.String("load", "mmap", "mmap, read or auto (llama_model_params.load_mode)")
	verbose := flag.Bool("verbose", false, "show llama.cpp's log")
	// A bad option is one line on stderr too, not flag's usage text.
	flag.CommandLine.Init("ollama-standin", flag.ContinueOnError)
	flag.CommandLine.SetOutput(io.Discard)
	if err := flag.CommandLine.Parse(os.Args[1:]); err != nil {
		fail("%v", err)
	}
	if *modelPath == "" || flag.NArg() != 0 {
		fail("usage: ollama-standin --model PATH [--tokens N] [--prompt TEXT] [--threads T] [--load mmap|read|auto] [--verbose]")
	}
	if *nGenerate < 1 || *nThreads < 1 {
		fail("--tokens and --threads want positive integers")
	}
	loadMode := parseLoadMode(*load)

	verboseFlag := C.int(0)
	if *verbose {
		verboseFlag = 1
	}
	C.set_logging(verboseFlag)
	backends := C.backend_dir()
	if backends == nil {
		fail("cannot find the directory libllama was loaded from")
	}
	C.ggml_backend_load_all_from_path(backends)
	C.llama_backend_init()

	modelParams := C.llama_model_default_params()
	modelParams.load_mode = loadMode
	cModelPath := C.CString(*modelPath)
	loadStart := time.Now()
	model := C.llama_model_load_from_file(cModelPath, modelParams)
	loadElapsed := time.Since(loadStart)
	if model == nil {
		fail("llama.cpp could not load the model %s (--verbose shows why)", *modelPath)
	}

	vocab := C.llama_model_get_vocab(model)
	cPrompt := C.CString(*prompt)
	promptLength := C.int32_t(len(*prompt))
	nPrompt := -int(C.llama_tokenize(vocab, cPrompt, promptLength, nil, 0, true, false))
	if nPrompt <= 0 {
		fail("cannot tokenize the prompt")
	}
	promptIds := tokenArray(nPrompt)
	if int(C.llama_tokenize(vocab, cPrompt, promptLength, &promptIds[0], C.int32_t(nPrompt), true, false)) != nPrompt {
		fail("cannot tokenize the prompt")
	}

	contextParams := C.llama_context_default_params()
	contextParams.n_ctx = C.uint32_t(nPrompt + *nGenerate)
	contextParams.n_batch = C.uint32_t(nPrompt)
	contextParams.n_threads = C.int32_t(*nThreads)
	contextParams.n_threads_batch = C.int32_t(*nThreads)
	contextParams.no_perf = true
	context := C.llama_init_from_model(model, contextParams)
	if context == nil {
		fail("llama.cpp could not create a context (--verbose shows why)")
	}
	sampler := C.llama_sampler_init_greedy()
	generated := tokenArray(*nGenerate)

	if C.llama_decode(context, C.llama_batch_get_one(&promptIds[0], C.int32_t(nPrompt))) != 0 {
		fail("llama_decode failed on the prompt")
	}
	generateStart := time.Now()
	for i := range generated {
		generated[i] = C.llama_sampler_sample(sampler, context, -1)
		if C.llama_decode(context, C.llama_batch_get_one(&generated[i], 1)) != 0 {
			fail("llama_decode failed at generated token %d", i)
		}
	}
	generateElapsed := time.Since(generateStart)

	fmt.Printf("load_ms: %.1f\n", float64(loadElapsed.Microseconds())/1e3)
	fmt.Printf("prompt_tokens:%s\n", formatIds(promptIds))
	fmt.Printf("tokens:%s\n", formatIds(generated))
	fmt.Printf("hash: %016x\n", fnv1a64(generated))
	fmt.Printf("tokens_per_second: %.2f\n", float64(len(generated))/generateElapsed.Seconds())

	C.llama_sampler_free(sampler)
	C.llama_free(context)
	C.llama_model_free(model)
	C.llama_backend_free()
	// Leave through libc's exit(3), as a host whose main loop lives in C does. Go's own
	// exit skips atexit handlers, and tibet-run --stats is reported from one; the tests
	// read those statistics to prove that the weights went through encrypted arenas.
	C.exit(0)
}
