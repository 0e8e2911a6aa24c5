module tibet.test/ollama-standin

go 1.19
