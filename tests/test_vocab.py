import pickle

import pytest

from t2f.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Vocabulary, tokenize

TEXTS = [
    "A smiling woman with long red hair and green eyes.",
    "This man has short black hair, a beard and glasses.",
    "Portrait of a bald man with blue eyes on a yellow background.",
]


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Man, with RED hair!  He doesn't smile.") == [
        "a", "man", "with", "red", "hair", "he", "doesn't", "smile"
    ]
    assert tokenize("clean-shaven") == ["clean", "shaven"]
    assert tokenize("  ...  ") == []


def test_special_ids():
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    v = Vocabulary(["a", "b"])
    assert v.itos[:4] == list(SPECIAL_TOKENS)
    assert len(v) == 6
    assert v.stoi["a"] == 4


def test_build_is_deterministic_freq_then_alpha():
    v = Vocabulary.build(["b a c", "a b", "a"])
    assert v.tokens == ["a", "b", "c"]  # a:3, b:2, c:1
    v2 = Vocabulary.build(["zeta alpha", "alpha zeta"])
    assert v2.tokens == ["alpha", "zeta"]  # ties alphabetical
    assert Vocabulary.build(TEXTS) == Vocabulary.build(list(TEXTS))
    assert Vocabulary.build(["x x y"], min_freq=2).tokens == ["x"]


def test_encode_decode_round_trip():
    v = Vocabulary.build(TEXTS)
    ids = v.encode(TEXTS[0])
    assert ids[0] == BOS and ids[-1] == EOS
    assert UNK not in ids
    assert v.decode(ids) == " ".join(tokenize(TEXTS[0]))
    assert v.decode([PAD, PAD, *ids, PAD]) == v.decode(ids)


def test_unknown_words_map_to_unk_and_warn():
    v = Vocabulary.build(TEXTS)
    ids = v.encode("a purple man", warn_unknown=False)
    assert ids == [BOS, v.stoi["a"], UNK, v.stoi["man"], EOS]
    with pytest.warns(UserWarning, match="purple"):
        v.encode("a purple zebra man", warn_unknown=True)
    with pytest.warns(UserWarning) as rec:
        v.encode("purple purple zebra", warn_unknown=True)
    assert len(rec) == 1 and "zebra" in str(rec[0].message)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "?!."])
def test_empty_caption_raises(text):
    v = Vocabulary.build(TEXTS)
    with pytest.raises(ValueError, match="no words"):
        v.encode(text)


def test_state_dict_round_trip_plain_types():
    v = Vocabulary.build(TEXTS)
    sd = v.state_dict()
    assert isinstance(sd, dict) and all(type(t) is str for t in sd["tokens"])
    v2 = Vocabulary.from_state_dict(pickle.loads(pickle.dumps(sd)))
    assert v2 == v and len(v2) == len(v)
    assert v2.encode(TEXTS[1]) == v.encode(TEXTS[1])
    assert v != Vocabulary(["other"])


def test_rejects_duplicates_and_specials():
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError):
        Vocabulary(["<pad>"])
