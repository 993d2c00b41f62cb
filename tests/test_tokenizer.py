"""Tokenizer: special tokens, exact round trips, and the loss mask of every task."""

import json
import random

import pytest

from qrw.config import UserError
from qrw.lm.tokenizer import (
    SPECIAL_TOKENS, Tokenizer, normalize_query, relevance_prompt, render_pretrain, render_relevance,
    render_rewrite, rewrite_prompt, show_loss_mask,
)


def ecommerce_corpus() -> list[str]:
    """A few hundred short shop-like strings (titles, queries, log lines); no dependency on qrw.world."""
    brands = ["nike", "adidas", "apple", "samsung", "sony", "lg", "bosch", "puma"]
    items = ["sneakers", "running shoes", "phone", "headphones", "earbuds", "fridge", "t-shirt", "backpack", "laptop"]
    attrs = ["black", "white", "blue", "128gb", "256gb", "size 42", "for men", "for women", "wireless", "cotton"]
    rng = random.Random(0)
    texts = []
    for _ in range(300):
        words = [rng.choice(brands), rng.choice(attrs), rng.choice(items)]
        if rng.random() < 0.3:
            words.insert(0, rng.choice(["cheap", "best", "buy", "new"]))
        texts.append(" ".join(words))
    texts += [f"query: {t} -> clicked: {t.upper()}" for t in texts[:50]]
    return texts


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(ecommerce_corpus(), vocab_size=400)


def test_special_tokens_are_single_fixed_ids(tok):
    ids = [tok.bos_id, tok.eos_id, tok.pad_id, tok.rewrite_id, tok.relevance_id, tok.sep_id, *tok.rel_ids]
    assert ids == list(range(9))
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.id_to_token(i) == s
        assert tok.decode([i]) == s
    assert 256 + 9 < tok.vocab_size <= 400  # bytes + specials + some merges


def test_special_strings_in_user_text_are_plain_text(tok):
    text = "buy <|eos|> now<|sep|><|rel_2|> <|bos|><|pad|>"
    ids = tok.encode(text)
    assert min(ids) >= len(SPECIAL_TOKENS)  # no special id at all
    assert tok.decode(ids) == text
    assert min(tok.encode_batch([text, "<|rewrite|>"])[1]) >= len(SPECIAL_TOKENS)
    # A query that types a special string gets exactly the structural special ids, nothing more.
    ids, mask = render_rewrite(tok, "shoes <|sep|> <|eos|>", "sneakers")
    assert ids.count(tok.sep_id) == 1 and ids.count(tok.eos_id) == 1
    ids = relevance_prompt(tok, "<|rel_2|>", "<|sep|>")
    assert ids.count(tok.sep_id) == 2 and not set(tok.rel_ids) & set(ids)


def test_round_trip_world_like_text(tok):
    for text in ecommerce_corpus():
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert len(tok.encode("nike black sneakers")) < len("nike black sneakers")  # merges were learned


def test_round_trip_arbitrary_unicode(tok):
    texts = [
        "", " ", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "café crème brûlée", "e\u0301\u0327 (combining)",
        "日本語のスニーカー", "手机 128g 黑色", "👟🔥 kicks 👍🏽", "👨‍👩‍👧", "\x00\x01\x07\x1b[0m control", "\ufeffbom",
        "zero\u200bwidth", "rtl עברית العربية", "\U0010ffff", "ＦＵＬＬＷＩＤＴＨ",
    ]
    rng = random.Random(1)
    for _ in range(50):  # random code points, surrogates excluded (not valid in UTF-8)
        cps = [rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD800), rng.randrange(0xE000, 0x110000)])
               for _ in range(rng.randrange(1, 12))]
        texts.append("".join(map(chr, cps)))
    for text in texts:
        ids = tok.encode(text)
        assert all(len(SPECIAL_TOKENS) <= i < tok.vocab_size for i in ids), text
        assert tok.decode(ids) == text, text


def test_pretrain_mask(tok):
    t = tok.encode("sony wireless headphones")
    ids, mask = render_pretrain(tok, "sony wireless headphones")
    assert ids == [tok.bos_id] + t + [tok.eos_id]
    assert mask == [0] + [1] * len(t) + [1]  # all but bos
    assert show_loss_mask(tok, ids, mask) == "<|bos|>[sony wireless headphones<|eos|>]"


def test_rewrite_mask(tok):
    q, r = tok.encode("blk kicks"), tok.encode("nike sneakers black")
    ids, mask = render_rewrite(tok, "blk kicks", "nike sneakers black")
    assert ids == [tok.bos_id, tok.rewrite_id] + q + [tok.sep_id] + r + [tok.eos_id]
    #         bos rewrite  {query}           sep   {rewrite}         eos
    assert mask == [0, 0] + [0] * len(q) + [0] + [1] * len(r) + [1]
    assert show_loss_mask(tok, ids, mask) == "<|bos|><|rewrite|>blk kicks<|sep|>[nike sneakers black<|eos|>]"
    prompt = rewrite_prompt(tok, "blk kicks")
    assert ids[:len(prompt)] == prompt and prompt[-1] == tok.sep_id
    assert mask.index(1) == len(prompt)  # the first trained token is the first one the rewriter generates


def test_relevance_mask(tok):
    q, r = tok.encode("blk kicks"), tok.encode("sneakers")
    for label in (0, 1, 2):
        ids, mask = render_relevance(tok, "blk kicks", "sneakers", label)
        assert ids == [tok.bos_id, tok.relevance_id] + q + [tok.sep_id] + r + [tok.sep_id, tok.rel_ids[label], tok.eos_id]
        #         bos relevance  {query}           sep   {rewrite}         sep  <|rel_k|>  eos
        assert mask == [0, 0] + [0] * len(q) + [0] + [0] * len(r) + [0, 1, 1]
        prompt = relevance_prompt(tok, "blk kicks", "sneakers")
        assert ids[:len(prompt)] == prompt and ids[len(prompt)] == tok.rel_ids[label]
    assert show_loss_mask(tok, ids, mask) == "<|bos|><|relevance|>blk kicks<|sep|>sneakers<|sep|>[<|rel_2|><|eos|>]"
    assert "\033[32m" in show_loss_mask(tok, ids, mask, color=True)
    assert relevance_prompt(tok, "blk kicks", "")[-2:] == [tok.sep_id, tok.sep_id]  # empty rewrite is allowed


def test_show_loss_mask_keeps_multibyte_characters(tok):
    ids, mask = render_rewrite(tok, "手机", "黑色 👟")
    assert show_loss_mask(tok, ids, mask) == "<|bos|><|rewrite|>手机<|sep|>[黑色 👟<|eos|>]"


def test_normalize_query():
    assert normalize_query("  Blk   KICKS\tfor\nMen ") == "blk kicks for men"
    assert normalize_query("CAFÉ\u3000Crème") == "café crème"  # ideographic space is whitespace
    assert normalize_query(" \t ") == ""


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "sub" / "tokenizer.json"
    tok.save(str(path))
    loaded = Tokenizer.load(str(path))
    assert loaded.vocab_size == tok.vocab_size
    text = "cheap <|eos|> nike 👟 size 42"
    assert loaded.encode(text) == tok.encode(text)
    assert min(loaded.encode(text)) >= len(SPECIAL_TOKENS)  # the no-special-parsing switch survives a reload
    assert Tokenizer.from_json(tok.to_json()).encode(text) == tok.encode(text)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left behind


def test_load_errors(tok, tmp_path):
    with pytest.raises(UserError, match="not found"):
        Tokenizer.load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(UserError, match="corrupt"):
        Tokenizer.load(str(bad))
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError):
        Tokenizer.load(str(bad))
    data = json.loads(tok.to_json())
    data["added_tokens"] = data["added_tokens"][1:]  # a valid tokenizer, but not a qrw one
    data["model"]["vocab"].pop("<|bos|>")
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match="special token"):
        Tokenizer.load(str(bad))


def test_bad_inputs(tok):
    for call in (
        lambda: render_rewrite(tok, "  ", "x"),
        lambda: render_rewrite(tok, "shoes", ""),
        lambda: rewrite_prompt(tok, ""),
        lambda: render_relevance(tok, "shoes", "x", 3),
        lambda: render_relevance(tok, "shoes", "x", True),
        lambda: render_pretrain(tok, ""),
        lambda: tok.encode(None),
        lambda: tok.decode([tok.vocab_size]),
        lambda: show_loss_mask(tok, [1, 2], [1]),
        lambda: Tokenizer.train([], 400),
        lambda: Tokenizer.train(["abc"], 100),
    ):
        with pytest.raises(UserError):
            call()
