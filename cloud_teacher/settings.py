"""Every knob of the teacher service (env prefix `GKT_TEACHER_`, same names as `gkt-teacher --help`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.llama.engine_settings import EngineSettings
from shared.pricing import TokenPrices
from shared.prompt_formats import PromptFormatSetting
from shared.server.settings_base import TierSettings


class TeacherSettings(TierSettings, EngineSettings):
    """Settings of `gkt-teacher`."""

    model_config = SettingsConfigDict(env_prefix="GKT_TEACHER_", cli_prog_name="gkt-teacher")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    backend: Literal["vllm", "llamacpp", "openai"] = Field(
        "vllm", description="Which engine runs the teacher: vLLM (default), llama.cpp, or an OpenAI-compatible server."
    )
    model: str | None = Field(
        None,
        description="The teacher model: a catalog name (`gkt models list`; default qwen2.5-coder-1.5b), or for vllm "
        "a Hugging Face directory or model id, for llamacpp a GGUF file, for openai the model name sent to the "
        "server (default: whatever the server lists first).",
    )
    prompt_format: PromptFormatSetting = Field(
        "auto",
        description="How chat messages are rendered for the teacher: its chat template ('chat'), the paper's "
        "'Q: ...\\nA:' transcript ('completion'), or 'auto' (the template if the model has one; the openai "
        "backend knows no template, so 'auto' means 'completion' there).",
    )
    chat_template_file: Path | None = Field(
        None,
        description="A Jinja chat template file that replaces the model's own (as vLLM's and llama.cpp's "
        "--chat-template); with prompt_format 'auto' it makes the model a chat model.",
    )
    max_guidance_tokens: int = Field(1024, ge=1, description="Largest K (guidance tokens) a request may ask for.")

    # vLLM backend
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="vllm: weight/activation dtype; 'auto' runs the checkpoint's own (catalog models are converted "
        "to bfloat16 where the CPU has native bf16, else float32).",
    )
    max_model_len: int = Field(4096, ge=64, description="vllm: longest prompt + guidance, in tokens.")
    kv_cache_space_gib: float = Field(
        2.0, gt=0, description="vllm on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm on GPU: share of GPU memory vLLM may use.")
    max_num_seqs: int = Field(32, ge=1, description="vllm: most sequences batched together (continuous batching).")
    tensor_parallel_size: int = Field(
        1, ge=1, description="vllm on GPUs: GPUs one model is split across (tensor parallel)."
    )
    pipeline_parallel_size: int = Field(1, ge=1, description="vllm on GPUs: pipeline stages (multi-node with Ray).")
    block_size: int = Field(
        32,
        ge=16,
        description="vllm: KV cache block size in tokens. Prefix-cache hits are whole blocks, so a verification "
        "(Verify) recomputes up to block_size - 1 tokens before its draft: 32 (the CPU backend's smallest) measured "
        "0.52-0.59 s per 8-token verification of a ~1,100-token prompt, against 1.8-2.7 s at the CPU default 128. "
        "On CPU a multiple of 32.",
    )
    enforce_eager: bool = Field(
        True, description="vllm: skip torch.compile/CUDA graphs (start-up 18 s instead of 80 s on CPU)."
    )

    # OpenAI-compatible backend
    openai_base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="openai: base URL of the /v1/completions server."
    )
    openai_api_key: SecretStr | None = Field(None, description="openai: API key (or use --openai-api-key-file).")
    openai_api_key_file: Path | None = Field(None, description="openai: file holding the API key.")
    openai_timeout_seconds: float = Field(120.0, gt=0, description="openai: timeout of one HTTP request.")

    # Accounting
    price_prompt_per_1k: float = Field(
        0.0015, ge=0, description="Price of 1,000 teacher prompt tokens (for gkt_cost_total)."
    )
    price_cached_prompt_per_1k: float | None = Field(
        None,
        ge=0,
        description="Price of 1,000 prompt tokens served from the prefix cache (unset: 10 % of the prompt price).",
    )
    price_generation_per_1k: float = Field(0.002, ge=0, description="Price of 1,000 teacher generated tokens.")

    def prices(self) -> TokenPrices:
        return TokenPrices.of(self.price_prompt_per_1k, self.price_generation_per_1k, self.price_cached_prompt_per_1k)
