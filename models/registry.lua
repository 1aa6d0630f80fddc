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
-- `sha256 = nil -- unknown`: a checksum is never guessed.
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
