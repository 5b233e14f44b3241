"""A loaded GGUF model and its tokenizer, on llama-cpp-python's low-level API."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import llama_cpp

from shared.prompt_formats import PromptPiece, merge_pieces

logger = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False
_llama_logger = logging.getLogger("llama_cpp.native")


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]  # ctypes callback factory
def _forward_native_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp prints every tensor it loads; that goes to DEBUG, warnings and errors stay visible."""
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
        _llama_logger.log(logging.WARNING if level in (3, 4) else logging.DEBUG, "%s", message)


def _init_backend() -> None:
    """Initialises llama.cpp once per process and routes its log output through `logging`."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_log_set(_forward_native_log, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


class LlamaModel:
    """Model weights plus vocabulary: tokenises, detokenises and knows its end-of-generation tokens."""

    def __init__(self, path: Path, *, vocab_only: bool = False) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only  # tokenizer only: no weights read
        self.path = path
        self.ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self.ptr)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Tokens of `text` (with BOS if the model adds one, when `add_special`). Control tokens written in the text
        (e.g. `<|im_start|>`) become control tokens only with `parse_special`, for trusted text."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_special, parse_special)
        if count < 0:  # the buffer was too small: llama.cpp returns minus the needed size
            capacity = -count
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_special, parse_special)
        return list(buffer[:count])

    def tokenize_pieces(self, pieces: Sequence[PromptPiece]) -> list[int]:
        """Tokens of a prompt in pieces: control tokens are parsed in trusted pieces only. Neighbouring pieces of the
        same trust are tokenised together (so text appended piece by piece tokenises as if written at once)."""
        tokens = [llama_cpp.llama_vocab_bos(self.vocab)] if self.add_bos else []
        for text, trusted in merge_pieces(pieces):
            tokens += self.tokenize(text, add_special=False, parse_special=trusted)
        return tokens

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for (control tokens render as nothing)."""
        buffer = ctypes.create_string_buffer(64)
        length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:length]

    def is_end_of_generation(self, token: int) -> bool:
        """True for the model's end-of-sequence / end-of-turn tokens."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def end_of_generation_tokens(self) -> list[int]:
        """Every token that ends generation for this model (e.g. Qwen's `<|im_end|>` and `<|endoftext|>`)."""
        return [token for token in range(self.n_vocab) if self.is_end_of_generation(token)]

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None when the model does not have it."""
        buffer = ctypes.create_string_buffer(1 << 16)
        length = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buffer, len(buffer))
        return buffer.value.decode("utf-8", errors="replace") if length >= 0 else None

    def close(self) -> None:
        """Frees the weights."""
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None
