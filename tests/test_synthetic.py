"""The synthetic page generator and the small-tokenizer trainer."""

import numpy as np
import pytest

from tokenocr.conversion import convert_tokenizer
from tokenocr.training.data import load_token_mask_dataset
from tokenocr.training.synthetic import PageStyle, SyntheticPageGenerator, generate_dataset, sample_sentences
from tokenocr.training.tokenizer import train_sentencepiece, train_tokenizer
from tokenocr.training.words import WORDS, split_words

from fixture_cases import FIXTURES


CLEAN = dict(tile_size=112, max_tiles=3, font_size=(14, 22), noise=(0.0, 0.0), blur_probability=0.0,
             rule_probability=0.0, background_boxes=6, background_box_size=(5, 10))


@pytest.fixture(scope="module")
def tokenizer():
    return convert_tokenizer(FIXTURES / "tiny_seg" / "checkpoint")


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` dilated by a square of side `2 * pixels + 1`."""
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    height, width = mask.shape
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def ink_of(image) -> np.ndarray:
    """Pixels clearly darker than the paper (text is at most 150 per channel, paper at least about 190)."""
    pixels = np.asarray(image, dtype=np.int32)
    paper = np.median(pixels.reshape(-1, 3), axis=0)
    return (paper[None, None, :] - pixels).max(axis=-1) > 50


@pytest.mark.parametrize("rotation,tolerance", [(0.0, 1), (5.0, 2)])
def test_masks_lie_on_the_rendered_glyphs(tokenizer, rotation, tolerance):
    generator = SyntheticPageGenerator(tokenizer, style=PageStyle(**CLEAN, max_rotation=rotation), seed=3)
    for index in range(3):
        image, mask, tokens, text = generator.render(index)
        ink = ink_of(image)
        text_tokens = [t for t in tokens if t["text"].strip()]
        background = [t for t in tokens if not t["text"].strip()]
        assert text_tokens and background
        for token in text_tokens:
            assert ink[mask == token["mask_index"]].any(), token  # every text token covers some ink
        text_area = np.isin(mask, [t["mask_index"] for t in text_tokens])
        covered = ink[grow(text_area, tolerance)].sum() / ink.sum()
        assert covered > 0.98, covered  # and nearly all ink belongs to some token
        for token in background:
            assert token["id"] == generator.space_token_id
            assert not ink[mask == token["mask_index"]].any()  # background boxes hold no ink
        assert not (grow(np.isin(mask, [t["mask_index"] for t in background]), 2) & text_area).any()
        written = "".join(t["text"] for t in text_tokens).replace(" ", "")
        assert written == "".join(text.split())  # the tokens spell the page, in reading order


def test_tokens_are_the_tokenizers_own(tokenizer):
    generator = SyntheticPageGenerator(tokenizer, style=PageStyle(**CLEAN), seed=5)
    _, _, tokens, text = generator.render(0)
    expected = []
    for line in text.split("\n"):
        encoded = tokenizer(" " + line, add_special_tokens=False, return_offsets_mapping=True)
        expected += [(i, (" " + line)[a:b]) for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
                     if (" " + line)[a:b].strip()]
    assert [(t["id"], t["text"]) for t in tokens if t["text"].strip()] == expected


def test_pages_are_reproducible_and_vary_with_the_seed(tokenizer):
    style = PageStyle(**{**CLEAN, "noise": (2.0, 6.0), "blur_probability": 0.5, "rule_probability": 0.5})
    first, again = SyntheticPageGenerator(tokenizer, style=style, seed=1), SyntheticPageGenerator(tokenizer, style=style, seed=1)
    image, mask, tokens, _ = first.render(4)
    image_again, mask_again, tokens_again, _ = again.render(4)
    assert np.array_equal(np.asarray(image), np.asarray(image_again)) and np.array_equal(mask, mask_again)
    assert tokens == tokens_again
    other = SyntheticPageGenerator(tokenizer, style=style, seed=2).render(4)
    assert other[3] != first.render(4)[3]


def test_generate_dataset_writes_the_format(tokenizer, tmp_path):
    train, heldout = split_words()
    folder = generate_dataset(tmp_path / "pages", tokenizer, 3, seed=0, words=heldout, style=PageStyle(**CLEAN))
    dataset = load_token_mask_dataset(folder)
    assert len(dataset) == 3
    page = dataset[1]
    assert np.asarray(page["mask"]).shape == (page["image"].height, page["image"].width)
    assert set(np.unique(np.asarray(page["mask"]))) == {0} | {t["mask_index"] for t in page["tokens"]}
    words = set(page["text"].split())
    assert words and not words & set(train)
    before = (folder / "metadata.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="not an empty folder"):
        generate_dataset(folder, tokenizer, 1)
    assert (folder / "metadata.jsonl").read_bytes() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        generate_dataset(tmp_path / "notes", tokenizer, 1)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_style_and_generator_errors(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ttf"):
        PageStyle(fonts=(str(tmp_path / "missing.ttf"),))
    with pytest.raises(ValueError, match="min_tiles <= max_tiles"):
        PageStyle(min_tiles=3, max_tiles=2)
    with pytest.raises(ValueError, match="at least one word"):
        SyntheticPageGenerator(tokenizer, words=[" "])


def test_word_split_is_disjoint_and_stable():
    train, heldout = split_words()
    assert not set(train) & set(heldout) and set(train) | set(heldout) == set(WORDS)
    assert 0.1 < len(heldout) / len(WORDS) < 0.3
    assert split_words() == (train, heldout)


def test_small_tokenizer_has_the_original_layout():
    import sentencepiece as spm

    train, _ = split_words()
    texts = sample_sentences(train, 2000, seed=0)
    model = train_sentencepiece(texts, vocab_size=400)
    tokenizer = train_tokenizer(texts, vocab_size=400)
    assert len(tokenizer) == 400
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    reference = spm.SentencePieceProcessor(model_proto=model)
    for text in [" hello world 12/04/2021", " Zebra€ naïve", texts[5]]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == reference.encode(text), text
    assert tokenizer("x")["input_ids"][0] == 1  # a plain call starts with BOS, like InternLM2's tokenizer
    assert len(tokenizer(" ", add_special_tokens=False)["input_ids"]) == 1
    assert any(piece.startswith("<0x") for piece in tokenizer.convert_ids_to_tokens(tokenizer(" €")["input_ids"]))
    characters = len(set("".join(texts)))
    with pytest.raises(ValueError, match=f"the {characters} distinct characters of the texts: it needs at least"):
        train_sentencepiece(texts, vocab_size=258 + characters)
    characters_only = train_tokenizer(texts, vocab_size=259 + characters)  # no merges: one token per character
    assert len(characters_only) == 259 + characters
    assert characters_only.convert_ids_to_tokens(characters_only(" they", add_special_tokens=False)["input_ids"]) == [
        "\u2581", "t", "h", "e", "y"]


def test_a_failed_generation_leaves_nothing_and_bad_masks_are_refused(tokenizer, tmp_path, monkeypatch):
    from tokenocr.training import synthetic
    from tokenocr.training.data import save_mask

    calls = []

    def failing(self, index):
        calls.append(index)
        if index == 2:
            raise RuntimeError("font exploded")
        return original(self, index)

    original = synthetic.SyntheticPageGenerator.render
    monkeypatch.setattr(synthetic.SyntheticPageGenerator, "render", failing)
    with pytest.raises(RuntimeError, match="font exploded"):
        synthetic.generate_dataset(tmp_path / "new", tokenizer, 4, style=synthetic.PageStyle(tile_size=56, max_tiles=2))
    assert not (tmp_path / "new").exists() and calls == [0, 1, 2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError):
        synthetic.generate_dataset(tmp_path / "empty", tokenizer, 4, style=synthetic.PageStyle(tile_size=56, max_tiles=2))
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    with pytest.raises(ValueError, match="whole numbers"):
        save_mask(np.array([[1.0, np.nan]]), tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
