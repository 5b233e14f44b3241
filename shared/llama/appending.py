"""Text added to a running sequence's prompt: appended text (guidance) re-tokenised into it, the scores of its
tokens (the model's agreement with it), a generating sequence reopened for more text, and truncation of a
sequence's KV cells to a token position (engine thread only)."""

from __future__ import annotations

import llama_cpp

from shared.llama.engine_core import BatchEntry, EngineCore
from shared.llama.engine_types import SequenceEvent, SequenceState
from shared.llama.scoring import TokenScore, logits_row, score
from shared.llama.sequence import EngineSequence
from shared.llama.text_stream import TextStream


class AppendStep(EngineCore):
    """The engine's steps that change a prompt after admission."""

    def _apply_appended_text(self) -> None:
        """Adds each slot's pending text to its prompt and re-tokenises it, keeping the KV cells that still agree."""
        for sequence in filter(None, self._slots):
            if not sequence.pending_text and not sequence.pending_drop:
                continue
            if sequence.pending_drop:
                # Only the sequence's own text is dropped (a rejected draft): its tokens leave the count of own
                # tokens in the prompt, which are completion tokens and never counted as prompt.
                before = len(self.model.tokenize_pieces(sequence.prompt))
                _drop_appended(sequence, sequence.pending_drop)
                sequence.pending_drop = 0
                dropped = before - len(self.model.tokenize_pieces(sequence.prompt))
                sequence.own_prompt_tokens = max(0, sequence.own_prompt_tokens - dropped)
            appended = "".join(sequence.pending_text)
            sequence.prompt.append((appended, False))  # appended text is never trusted
            sequence.pending_text.clear()
            sequence.output_context += appended
            assert sequence.text_stream is not None
            sequence.text_stream.seed(sequence.output_context)
            tokens = self.model.tokenize_pieces(sequence.prompt)
            if len(tokens) >= self.n_ctx_per_slot:
                # More text than the admission check reserved (a teacher that wrote more than asked, or text that
                # re-tokenised longer): the answer ends here, as when it runs out of room while generating.
                self._finish(sequence, "length")
                continue
            # Text appended can re-tokenise the end of what was there: keep the common prefix, drop the rest.
            common = 0
            for old, new in zip(sequence.tokens[: sequence.n_past], tokens, strict=False):
                if old != new:
                    break
                common += 1
            if common < sequence.n_past:
                self._truncate(sequence, common)
            sequence.tokens = tokens

    def _truncate(self, sequence: EngineSequence, position: int) -> None:
        """Drops `sequence`'s KV cells from token `position` on, so its prompt is prefilled again from there.

        The one place a sequence goes back: re-tokenised appended text, a reopened prompt and a rollback (a verified
        draft cut back to its accepted characters by `EngineSequence.rewrite`) use it.
        """
        llama_cpp.llama_memory_seq_rm(self._memory, sequence.slot, position, -1)
        sequence.n_past = min(sequence.n_past, position)
        if sequence.pending_row is not None and sequence.pending_row[0] >= position:
            sequence.pending_row = None  # its position is prefilled again; the token after it unscored

    def _score(self, sequence: EngineSequence, entry: BatchEntry) -> None:
        """Scores the appended tokens this piece prefilled, from the logits before each (called before `n_past`
        moves on): the first from the row kept from the previous step, the others from this step's rows."""
        start, end = sequence.n_past, sequence.n_past + entry.n_tokens
        scores: list[TokenScore] = []
        held = sequence.pending_row
        if held is not None and held[0] == start - 1 and start >= sequence.initial_prompt_tokens:
            scores.append(score(held[1], sequence.tokens[start], start, sequence.params.score_top_k))
        sequence.pending_row = None
        for index, pos in entry.score_rows:
            row = logits_row(llama_cpp.llama_get_logits_ith(self._ctx, index), self.model.n_vocab)
            if pos + 1 < end:
                if pos + 1 >= sequence.initial_prompt_tokens:
                    scores.append(score(row, sequence.tokens[pos + 1], pos + 1, sequence.params.score_top_k))
            else:
                sequence.pending_row = (pos, row)  # its next token is not prefilled yet
        if scores:
            sequence._emit(SequenceEvent(scores=tuple(scores)))

    def _reopen(self, sequence: EngineSequence) -> None:
        """Pauses a generating sequence: the text it wrote joins its prompt (its KV cells kept where the tokens
        agree), the prompt opens for more text (e.g. a teacher's burst), and `close_prompt` resumes generation."""
        assert sequence.text_stream is not None
        held_back = sequence.text_stream.flush()
        written = sequence.text_stream.text
        in_cache = [*sequence.tokens, *sequence.generated][: sequence.n_past]
        old_prompt_tokens = len(sequence.tokens)
        sequence.prompt.append((written, False))  # the model's own text: plain text, like everything appended
        tokens = self.model.tokenize_pieces(sequence.prompt)
        common = 0
        for old, new in zip(in_cache, tokens, strict=False):
            if old != new:
                break
            common += 1
        self._truncate(sequence, common)
        sequence.own_prompt_tokens += max(0, len(tokens) - old_prompt_tokens)
        sequence.n_past, sequence.tokens, sequence.generated = common, tokens, []
        sequence.output_context = written
        sequence.text_stream = TextStream(sequence.params.stop)
        sequence.text_stream.seed(written)
        sequence.scoring, sequence.pending_row = False, None
        with self._lock:
            sequence.pause_requested = False
            sequence.prompt_open = True
            sequence.state = SequenceState.PREFILL
            ended, sequence.draft_ended, sequence.pause_at = sequence.draft_ended, False, 0
        sequence._emit(SequenceEvent(text=held_back, paused=True, ended=ended))


def _drop_appended(sequence: EngineSequence, count: int) -> None:
    """Drops the last `count` characters of the prompt's appended (untrusted) text; the template's markup before it
    is never touched (the flow drops only what the sequence wrote). The tokens are re-made from the text by the
    caller, which truncates the KV cells."""
    sequence.output_context = sequence.output_context[: max(0, len(sequence.output_context) - count)]
    while count > 0 and sequence.prompt and not sequence.prompt[-1][1]:
        text = sequence.prompt[-1][0]
        if len(text) > count:
            sequence.prompt[-1] = (text[: len(text) - count], False)
            break
        sequence.prompt.pop()
        count -= len(text)
