"""Byte-level BPE tokenizer, special tokens, and the prompt renderers of each task.

The tokenizer is a byte-level BPE (GPT-2 style) trained with HuggingFace
``tokenizers`` on the world's text. Byte level means every string, whatever its
Unicode (emoji, CJK, accents, combining marks, control characters), encodes to
known ids and decodes back to itself exactly: there is no unknown token and no
text normalisation inside the tokenizer.

Special tokens (each exactly one id, ids 0..8 in this order)::

    <|bos|> <|eos|> <|pad|> <|rewrite|> <|relevance|> <|sep|> <|rel_0|> <|rel_1|> <|rel_2|>

They are never produced from text. ``tokenizers`` matches added tokens in the
input text before BPE, even with ``add_special_tokens=False``, so a user typing
``<|eos|>`` into a query would inject a real EOS. We switch that matching off
(``encode_special_tokens = True``: special strings are encoded as ordinary
bytes) and place special ids only where the renderers below put them.

One function per task renders ``(ids, loss_mask)``::

    pretrain:   <|bos|>{text}<|eos|>                                  loss on all but bos
    rewrite:    <|bos|><|rewrite|>{query}<|sep|>{rewrite}<|eos|>       loss on {rewrite}<|eos|>
    relevance:  <|bos|><|relevance|>{query}<|sep|>{rewrite}<|sep|><|rel_k|><|eos|>
                                                                      loss on <|rel_k|><|eos|>

Masking convention (the one used everywhere in qrw): ``loss_mask[i] == 1`` means
token ``ids[i]`` is a training target, predicted from the logits at position
``i - 1``. The collator therefore trains on ``inputs = ids[:-1]``,
``targets = ids[1:]``, ``target_mask = loss_mask[1:]``; ``loss_mask[0]`` is
always 0 (nothing predicts BOS).

Queries are normalised by :func:`normalize_query` (strip, collapse whitespace,
lowercase) by the *callers* of the renderers (the data module, the rewriter
CLI), so a renderer renders exactly what it is given.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from qrw.checkpoint import atomic_write_bytes
from qrw.config import Parser, UserError, check, run_main

SPECIAL_TOKENS = (
    "<|bos|>", "<|eos|>", "<|pad|>", "<|rewrite|>", "<|relevance|>", "<|sep|>",
    "<|rel_0|>", "<|rel_1|>", "<|rel_2|>",
)
NUM_LABELS = 3  # relevance grades 0 (irrelevant), 1 (partial), 2 (equivalent)
N_BYTES = 256   # the byte-level alphabet every BPE vocabulary starts from


def normalize_query(text: str) -> str:
    """Canonical form of a user query: strip, collapse whitespace runs to one space, lowercase.

    Whitespace is whatever ``str.split()`` splits on (spaces, tabs, newlines,
    Unicode spaces). Nothing else changes: accents, emoji and punctuation are kept.

    >>> normalize_query("  Blk   KICKS\\tfor Men ")
    'blk kicks for men'
    """
    return " ".join(text.split()).lower()


class Tokenizer:
    """Byte-level BPE with qrw's special tokens; wraps a ``tokenizers.Tokenizer``.

    Build one with :meth:`train` or :meth:`load`. Attributes: ``vocab_size``
    (BPE merges + 256 bytes + 9 specials), the special ids ``bos_id eos_id pad_id
    rewrite_id relevance_id sep_id`` and ``rel_ids`` (the label ids of grades 0, 1, 2).
    """

    def __init__(self, hf: HFTokenizer):
        for i, s in enumerate(SPECIAL_TOKENS):
            check(hf.token_to_id(s) == i, f"tokenizer is not a qrw tokenizer: special token {s} is not id {i}")
        self._hf = hf
        # Special strings in user text stay plain bytes (see the module docstring).
        # The switch exists since tokenizers 0.15.1; check once that it works.
        check(hasattr(hf, "encode_special_tokens"), "qrw needs tokenizers >= 0.15.1 (encode_special_tokens)")
        self._hf.encode_special_tokens = True
        leaked = [i for i in hf.encode("".join(SPECIAL_TOKENS), add_special_tokens=False).ids if i < len(SPECIAL_TOKENS)]
        check(not leaked, "this tokenizers version turns special-token text into special ids; cannot encode user text safely")
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id, self.rewrite_id, self.relevance_id, self.sep_id = range(6)
        self.rel_ids: tuple[int, int, int] = (6, 7, 8)

    # ----- construction and persistence -----

    @classmethod
    def train(cls, texts: list[str], vocab_size: int, *, min_frequency: int = 2) -> "Tokenizer":
        """Train a byte-level BPE of at most ``vocab_size`` ids (specials included) on ``texts``.

        The vocabulary may come out smaller when the corpus has few frequent pairs
        (``min_frequency`` is the least count a merge needs). Deterministic for a
        given list of texts.
        """
        texts = list(texts)
        check(len(texts) > 0, "cannot train a tokenizer on an empty corpus")
        minimum = N_BYTES + len(SPECIAL_TOKENS)
        check(vocab_size >= minimum, f"vocab_size must be >= {minimum} (256 bytes + {len(SPECIAL_TOKENS)} specials), got {vocab_size}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    def to_json(self) -> str:
        """The tokenizer as a ``tokenizer.json`` string (HuggingFace format)."""
        return self._hf.to_str()

    @classmethod
    def from_json(cls, data: str) -> "Tokenizer":
        """Inverse of :meth:`to_json`; a malformed string raises :class:`UserError`."""
        try:
            hf = HFTokenizer.from_str(data)
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise UserError(f"corrupt tokenizer: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return cls(hf)

    def save(self, path: str) -> None:
        """Write ``tokenizer.json`` atomically (temp file in the same folder, then rename)."""
        atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        """Read a file written by :meth:`save`; missing or corrupt files raise :class:`UserError`."""
        check(os.path.isfile(path), f"tokenizer file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read tokenizer file {path}: {e}") from None
        try:
            return cls.from_json(data)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None

    # ----- encoding -----

    def encode(self, text: str) -> list[int]:
        """Ids of plain ``text``; never a special id, even if the text contains ``<|eos|>``."""
        check(isinstance(text, str), f"expected a str to encode, got {type(text).__name__}")
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """:meth:`encode` over many texts (parallel inside ``tokenizers``)."""
        for t in texts:
            check(isinstance(t, str), f"expected a str to encode, got {type(t).__name__}")
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int], *, skip_special: bool = False) -> str:
        """Text of ``ids``; special ids show as their strings unless ``skip_special``.

        A sequence cut inside a multi-byte character decodes to U+FFFD there.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        check(not bad, f"token id {bad[0] if bad else ''} out of range [0, {self.vocab_size})")
        return self._hf.decode(ids, skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry of id ``i`` (byte-level form, e.g. ``'Ġblack'``)."""
        return self._hf.id_to_token(i)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


# ----- prompt renderers: one function per task, each returns (ids, loss_mask) -----

def _nonblank(text: str, what: str) -> str:
    check(isinstance(text, str), f"{what} must be a str, got {type(text).__name__}")
    check(text.strip() != "", f"empty {what}")
    return text


def render_pretrain(tok: Tokenizer, text: str) -> tuple[list[int], list[int]]:
    """``<|bos|>{text}<|eos|>``, loss on every token but BOS (stage 0 language modelling)."""
    ids = [tok.bos_id] + tok.encode(_nonblank(text, "pretraining text")) + [tok.eos_id]
    return ids, [0] + [1] * (len(ids) - 1)


def rewrite_prompt(tok: Tokenizer, query: str) -> list[int]:
    """``<|bos|><|rewrite|>{query}<|sep|>``: what the rewriter sees; it then generates the rewrite."""
    return [tok.bos_id, tok.rewrite_id] + tok.encode(_nonblank(query, "query")) + [tok.sep_id]


def render_rewrite(tok: Tokenizer, query: str, rewrite: str) -> tuple[list[int], list[int]]:
    """``<|bos|><|rewrite|>{query}<|sep|>{rewrite}<|eos|>``, loss on ``{rewrite}<|eos|>``."""
    prompt = rewrite_prompt(tok, query)
    target = tok.encode(_nonblank(rewrite, "rewrite")) + [tok.eos_id]
    return prompt + target, [0] * len(prompt) + [1] * len(target)


def relevance_prompt(tok: Tokenizer, query: str, rewrite: str) -> list[int]:
    """``<|bos|><|relevance|>{query}<|sep|>{rewrite}<|sep|>``: the next token is the label.

    ``rewrite`` may be empty (a policy can emit an empty rewrite, and the learned
    relevance reward must still score it); ``query`` may not.
    """
    check(isinstance(rewrite, str), f"rewrite must be a str, got {type(rewrite).__name__}")
    return ([tok.bos_id, tok.relevance_id] + tok.encode(_nonblank(query, "query")) + [tok.sep_id]
            + tok.encode(rewrite) + [tok.sep_id])


def render_relevance(tok: Tokenizer, query: str, rewrite: str, label: int) -> tuple[list[int], list[int]]:
    """``<|bos|><|relevance|>{query}<|sep|>{rewrite}<|sep|><|rel_k|><|eos|>``, loss on ``<|rel_k|><|eos|>``."""
    check(label in (0, 1, 2) and not isinstance(label, bool), f"relevance label must be 0, 1 or 2, got {label!r}")
    prompt = relevance_prompt(tok, query, rewrite)
    target = [tok.rel_ids[label], tok.eos_id]
    return prompt + target, [0] * len(prompt) + [1] * len(target)


def show_loss_mask(tok: Tokenizer, ids: list[int], mask: list[int], *, color: bool = False) -> str:
    """Render ``ids`` as text with the trained tokens (``mask == 1``) in [brackets] (or green with ``color``).

    >>> # show_loss_mask(tok, *render_rewrite(tok, "blk kicks", "black sneakers"))
    >>> # '<|bos|><|rewrite|>blk kicks<|sep|>[black sneakers<|eos|>]'
    """
    check(len(ids) == len(mask), f"ids and mask differ in length ({len(ids)} vs {len(mask)})")
    out, i = [], 0
    while i < len(ids):  # one run of equal mask values at a time, decoded together (keeps UTF-8 intact)
        j = i
        while j < len(ids) and bool(mask[j]) == bool(mask[i]):
            j += 1
        text = tok.decode(ids[i:j])
        if mask[i]:
            text = f"\033[32m{text}\033[0m" if color else f"[{text}]"
        out.append(text)
        i = j
    return "".join(out)


# ----- command line: inspect a tokenizer -----

_DEMO_CORPUS = [
    "nike men's running sneakers black", "blk kicks for men", "apple iphone 15 128gb blue",
    "samsung galaxy s24 256gb", "cheap earbuds wireless", "sony wireless headphones",
    "lg fridge double door silver", "telly 55 inch", "adidas t-shirt cotton white size m",
]


def main() -> None:
    parser = Parser(prog="python -m qrw.lm.tokenizer", description="Show how a qrw tokenizer splits text and masks the loss.")
    parser.add_argument("texts", nargs="*", help="texts to encode")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json to load (default: train a demo one)")
    parser.add_argument("--demo", action="store_true", help="also print the three task renderings with their loss masks")
    args = parser.parse_args()
    tok = Tokenizer.load(args.tokenizer) if args.tokenizer else Tokenizer.train(_DEMO_CORPUS * 4, 300)
    print(tok)
    for text in args.texts:
        ids = tok.encode(text)
        print(f"{text!r} -> {len(ids)} ids {ids}")
        print("  " + " ".join(repr(tok.decode([i])) for i in ids))
    if args.demo or not args.texts:
        print(show_loss_mask(tok, *render_pretrain(tok, "nike men's running sneakers black")))
        print(show_loss_mask(tok, *render_rewrite(tok, "blk kicks for men", "nike men's sneakers black")))
        print(show_loss_mask(tok, *render_relevance(tok, "blk kicks for men", "men's sneakers", 1)))


if __name__ == "__main__":
    run_main(main)
