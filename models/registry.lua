--- Public GGUF small models that `slm pull NAME` downloads.
--
-- Each entry: name (what `slm pull`/`slm run` accept, matched without regard
-- to case), file (the name in the cache directory), url, arch, size (exact
-- bytes) and sha256 (hex) when the publisher lists them, else nil, and
-- listed_size (the size as the publisher's file listing rounds it, for
-- information only). `slm pull` verifies the size and the checksum when
-- they are known; with sha256 = nil it prints the digest it computed so that
-- it can be pinned here after checking it against the publisher's page.
--
-- The URLs, file names and listed sizes are the Hugging Face repositories'
-- file listings. None of the exact sizes or checksums was available when
-- this table was written (the machine was offline), so every entry says
-- `sha256 = nil -- unknown`: a checksum is never guessed. The file names of
-- the Qwen3, Gemma 3, SmolLM3, Phi-4-mini and Granite 3.3 entries come from
-- the repositories' names as public download scripts use them (and, for
-- gemma-3-1b-it, the repository's file list); an entry says when its name
-- is only the repository's naming pattern.
--
-- SLM_REGISTRY=path/to/registry.lua replaces this table (tests use it with
-- file:// URLs).
return {
  {
    name = "SmolLM2-135M-Instruct",
    file = "SmolLM2-135M-Instruct-Q8_0.gguf",
    url = "https://huggingface.co/unsloth/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct-Q8_0.gguf",
    arch = "llama", listed_size = "145 MB",
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "SmolLM2-360M-Instruct",
    file = "SmolLM2-360M-Instruct-Q8_0.gguf",
    url = "https://huggingface.co/unsloth/SmolLM2-360M-Instruct-GGUF/resolve/main/SmolLM2-360M-Instruct-Q8_0.gguf",
    arch = "llama", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "Qwen2.5-0.5B-Instruct",
    file = "qwen2.5-0.5b-instruct-q8_0.gguf",
    url = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q8_0.gguf",
    arch = "qwen2", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "Llama-3.2-1B-Instruct",
    file = "Llama-3.2-1B-Instruct-Q8_0.gguf",
    url = "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q8_0.gguf",
    arch = "llama", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "Qwen3-0.6B",
    file = "Qwen3-0.6B-Q8_0.gguf",
    url = "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf",
    arch = "qwen3", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "gemma-3-270m-it",
    file = "gemma-3-270m-it-Q8_0.gguf",
    url = "https://huggingface.co/ggml-org/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q8_0.gguf",
    arch = "gemma3", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "gemma-3-1b-it",
    file = "gemma-3-1b-it-Q8_0.gguf",
    url = "https://huggingface.co/ggml-org/gemma-3-1b-it-GGUF/resolve/main/gemma-3-1b-it-Q8_0.gguf",
    arch = "gemma3", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "SmolLM3-3B",
    file = "SmolLM3-Q8_0.gguf",
    url = "https://huggingface.co/ggml-org/SmolLM3-3B-GGUF/resolve/main/SmolLM3-Q8_0.gguf",
    arch = "smollm3", listed_size = nil,
    size = nil, sha256 = nil, -- unknown
  },
  {
    name = "Phi-4-mini-instruct",
    file = "Phi-4-mini-instruct-Q8_0.gguf",
    url = "https://huggingface.co/unsloth/Phi-4-mini-instruct-GGUF/resolve/main/Phi-4-mini-instruct-Q8_0.gguf",
    arch = "phi3", listed_size = nil,
    size = nil, sha256 = nil, -- unknown (file name follows the repository's naming, not confirmed)
  },
  {
    name = "granite-3.3-2b-instruct",
    file = "granite-3.3-2b-instruct-Q8_0.gguf",
    url = "https://huggingface.co/ibm-granite/granite-3.3-2b-instruct-GGUF/resolve/main/granite-3.3-2b-instruct-Q8_0.gguf",
    arch = "granite", listed_size = nil,
    size = nil, sha256 = nil, -- unknown (file name follows the repository's naming, not confirmed)
  },
  {
    name = "RWKV7-0.1B-G1",
    file = "rwkv7-g1-0.1b-Q8_0.gguf",
    url = "https://huggingface.co/zhiyuan8/RWKV-v7-0.1B-G1-GGUF/resolve/main/rwkv7-g1-0.1b-Q8_0.gguf",
    arch = "rwkv7", listed_size = nil,
    size = nil, sha256 = nil, -- unknown (file name not confirmed either)
  },
  {
    name = "Mamba-130M",
    file = "mamba-130m-hf.Q8_0.gguf",
    url = "https://huggingface.co/Felladrin/gguf-mamba-130m-hf/resolve/main/mamba-130m-hf.Q8_0.gguf",
    arch = "mamba", listed_size = "155 MB",
    size = nil, sha256 = nil, -- unknown
  },
}
