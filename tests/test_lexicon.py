"""Word lists for the latent-language lens: committed data, CLDR lists, user CSVs."""

import re
import unicodedata

import pandas as pd
import pytest
from babel import Locale

from workbench.datasets.lexicon import (
    LANGUAGES,
    LexiconError,
    babel_word_list,
    language_name,
    load_cloze,
    load_concepts,
    parallel_pairs,
    parse_word_csv,
)

CLOZE_LANGUAGES = ["en", "fr", "de", "ru", "zh", "ja"]
UNSPACED = {"zh", "ja"}  # scripts written without spaces between words


@pytest.fixture(scope="module")
def concepts():
    return load_concepts()


@pytest.fixture(scope="module")
def cloze():
    return load_cloze()


# --- committed concept list -------------------------------------------------------------


def test_concept_count_and_languages(concepts):
    assert len(concepts) >= 160
    assert list(concepts.columns) == ["concept", *LANGUAGES]
    assert len(LANGUAGES) >= 10
    assert not (concepts == "").any().any(), "every concept has a word in every language"


def test_concepts_unique_and_words_unique_per_language(concepts):
    assert not concepts["concept"].duplicated().any()
    for code in LANGUAGES:
        repeated = concepts.loc[concepts[code].duplicated(keep=False), ["concept", code]]
        assert repeated.empty, f"{code}: one word for several concepts:\n{repeated}"


def test_no_translation_spelled_like_english(concepts):
    for code in LANGUAGES:
        if code == "en":
            continue
        same = concepts[concepts[code].str.casefold() == concepts["en"].str.casefold()]
        assert same.empty, f"{code} equals English for {same['concept'].tolist()}"


def test_single_words_without_stray_spaces(concepts):
    for code in LANGUAGES:
        for word in concepts[code]:
            assert word == word.strip() and " " not in word, (code, word)


def _scripts(word):
    return {unicodedata.name(ch).split()[0] for ch in word if ch != "-"}


@pytest.mark.parametrize(
    "code, allowed",
    [
        ("en", {"LATIN"}), ("fr", {"LATIN"}), ("de", {"LATIN"}), ("es", {"LATIN"}),
        ("it", {"LATIN"}), ("pt", {"LATIN"}), ("ru", {"CYRILLIC"}), ("zh", {"CJK"}),
        ("ja", {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"}), ("ko", {"HANGUL"}),
    ],
)
def test_words_are_in_the_language_script(concepts, code, allowed):
    # Catches look-alike letters (Latin 'o' inside a Russian word) and pasted text in the wrong column.
    for word in concepts[code]:
        assert _scripts(word) <= allowed, (code, word, _scripts(word))


def test_lowercase_except_german_nouns(concepts):
    for code in ["en", "fr", "es", "it", "pt", "ru"]:
        upper = [w for w in concepts[code] if w != w.lower()]
        assert not upper, (code, upper)
    for word in concepts["de"]:
        assert word in (word.lower(), word[0].upper() + word[1:].lower()), word


def test_spot_checks_by_hand(concepts):
    rows = concepts.set_index("concept")
    assert rows.loc["water", ["fr", "de", "ru", "zh", "ja", "ko"]].tolist() == ["eau", "Wasser", "вода", "水", "水", "물"]
    assert rows.loc["dog", ["es", "it", "pt"]].tolist() == ["perro", "cane", "cachorro"]
    assert rows.loc["eat", ["fr", "ja", "ko"]].tolist() == ["manger", "食べる", "먹다"]


def test_load_concepts_selects_languages():
    df = load_concepts(["fr", "zh"])
    assert list(df.columns) == ["concept", "fr", "zh"]
    with pytest.raises(LexiconError, match=r"'xx'.*available: en, fr"):
        load_concepts(["fr", "xx"])
    with pytest.raises(LexiconError, match="at least one language"):
        load_concepts([])


# --- cloze sentences --------------------------------------------------------------------


def test_cloze_coverage(cloze):
    assert list(cloze.columns) == ["concept", "lang", "sentence", "answer"]
    assert not cloze.duplicated(["concept", "lang"]).any()
    per_concept = cloze.groupby("concept")["lang"].apply(set)
    assert len(per_concept) >= 60
    for concept, langs in per_concept.items():
        assert set(CLOZE_LANGUAGES) <= langs, concept


def test_cloze_answers_match_concepts_and_blanks(cloze, concepts):
    words = concepts.set_index("concept")
    for row in cloze.itertuples():
        assert row.sentence.count("___") == 1, row
        assert row.answer == words.loc[row.concept, row.lang], row
        rest = row.sentence.replace("___", " ")
        if row.lang in UNSPACED:
            leaked = row.answer in rest
        else:
            leaked = re.search(rf"\b{re.escape(row.answer)}\b", rest, re.IGNORECASE) is not None
            # A blank opening the sentence would need a capitalised answer.
            assert not row.sentence.startswith("___"), row
        assert not leaked, f"the answer appears outside the blank: {row}"


def test_load_cloze_filters_languages():
    df = load_cloze(["ja", "ru"])
    assert set(df["lang"]) == {"ja", "ru"}
    with pytest.raises(LexiconError, match=r"'ko'.*available: en"):
        load_cloze(["ko"])


# --- language names -----------------------------------------------------------------------


def test_language_names():
    assert [language_name(c) for c in ["fr", "zh", "ja", "ru", "de"]] == ["Français", "中文", "日本語", "Русский", "Deutsch"]
    assert language_name("de", in_lang="en") == "German"
    assert language_name("fr", in_lang="de") == "Französisch"
    assert f'{language_name("fr")}: "x" - {language_name("zh")}: "y"' == 'Français: "x" - 中文: "y"'
    with pytest.raises(LexiconError, match="'klingon'"):
        language_name("klingon")
    with pytest.raises(LexiconError, match="'xx'"):
        language_name("fr", in_lang="xx")


def test_languages_dict_matches_cldr_english_names():
    english = Locale("en").languages
    assert {code: english[code] for code in LANGUAGES} == LANGUAGES


# --- CLDR lists -----------------------------------------------------------------------------

FR_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre"]


def test_months_match_cldr():
    # ja first: babel 2.18 leaked one locale's stand-alone month names into the next.
    df = babel_word_list("months", ["ja", "fr", "ru", "en"])
    assert len(df) == 12
    assert df["concept"].tolist()[:3] == ["january", "february", "march"]
    assert df["fr"].tolist() == FR_MONTHS
    assert df["ja"].tolist() == [f"{m}月" for m in range(1, 13)]
    assert df["ru"].iloc[0] == "январь"  # the dictionary form, not the genitive 'января'
    for code in ["fr", "ja"]:
        wide = Locale.parse(code).months["stand-alone"]["wide"]
        assert df[code].tolist() == [wide[m] for m in range(1, 13)]


def test_weekdays_match_cldr():
    df = babel_word_list("weekdays", ["fr", "ja", "de"])
    assert len(df) == 7
    assert df["concept"].tolist() == ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    assert df["fr"].tolist() == ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
    assert df["ja"].iloc[0] == "月曜日" and df["de"].iloc[6] == "Sonntag"
    for code in ["fr", "ja"]:
        wide = Locale.parse(code).days["stand-alone"]["wide"]
        assert df[code].tolist() == [wide[d] for d in range(7)]


def test_countries_and_languages():
    countries = babel_word_list("countries", ["fr", "de", "ja"]).set_index("concept")
    assert len(countries) > 200
    assert countries.loc["FR"].tolist() == ["France", "Frankreich", "フランス"]
    assert not {"ZZ", "EU", "UN", "001", "419"} & set(countries.index)
    languages = babel_word_list("languages", ["fr", "ja"]).set_index("concept")
    assert languages.loc["de"].tolist() == ["allemand", "ドイツ語"]
    assert all(len(code) == 2 for code in languages.index)


def test_babel_word_list_errors():
    with pytest.raises(LexiconError, match="'xx'"):
        babel_word_list("months", ["fr", "xx"])
    with pytest.raises(LexiconError, match="months, weekdays, countries, languages"):
        babel_word_list("planets", ["fr"])
    with pytest.raises(LexiconError, match="at least one language"):
        babel_word_list("months", [])
    with pytest.raises(LexiconError, match="twice: fr"):
        babel_word_list("months", ["fr", "fr"])


# --- user CSV --------------------------------------------------------------------------------

GOOD_CSV = "\ufeffconcept, en ,fr,zh\nwater, water , eau ,水\n\nsun,sun,,太阳\nbig,big,grand,\n"


def test_parse_word_csv_good_input():
    df = parse_word_csv(GOOD_CSV)
    assert list(df.columns) == ["concept", "en", "fr", "zh"]
    assert df["concept"].tolist() == ["water", "sun", "big"]
    assert df.loc[0].tolist() == ["water", "water", "eau", "水"]
    assert pd.isna(df.loc[1, "fr"]) and pd.isna(df.loc[2, "zh"])
    assert df.attrs["incomplete_rows"] == 2
    assert parallel_pairs(df, "en", "fr") == [("water", "eau"), ("big", "grand")]
    assert parallel_pairs(df, "en", "zh") == [("water", "水"), ("sun", "太阳")]
    assert parallel_pairs(df, "fr", "fr") == [("eau", "eau"), ("grand", "grand")]


def test_parse_word_csv_without_concept_column_and_from_files(tmp_path):
    text = 'de,fr\nWasser,eau\n"Hund, der",chien\n'
    df = parse_word_csv(text)
    assert df["concept"].tolist() == ["Wasser", "Hund, der"]
    assert df.attrs["incomplete_rows"] == 0
    path = tmp_path / "words.csv"
    path.write_text(text, encoding="utf-8")
    for source in (path, str(path), text.encode("utf-8")):
        assert parse_word_csv(source).equals(df)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("  \n\n,,\n", "empty"),
        ("en,fr\n", "no rows of words"),
        ("en\nwater\n", "at least two language columns"),
        ("concept,fr\nwater,eau\n", "at least two language columns"),
        ("en,xx\nwater,eau\n", r"Unknown language code\(s\) in the header: 'xx'"),
        ("water,eau\nsun,soleil\n", "'water', 'eau'"),
        ("en;fr\nwater;eau\n", "'en;fr'"),
        ("en,fr,fr\nwater,eau,eau\n", "named twice in the header: fr"),
        ("en,,fr\nwater,x,eau\n", "Column 2 of the header is empty"),
        ("concept,en,concept\nx,water,y\n", "more than one 'concept'"),
        ("en,fr\nwater,eau,extra\n", "Line 2 has 3 cells but the header has 2"),
        ("en,fr\nwater,\n,soleil\n", "No row has words in two languages"),
        ("concept,en,fr\nx,water,eau\nx,sun,soleil\n", r"'x' appears more than once \(lines 2, 3\)"),
        ("en,fr\nwater,eau\nwater,aqua\n", "'water' appears more than once"),
    ],
)
def test_parse_word_csv_rejects_malformed(text, message):
    with pytest.raises(LexiconError, match=message):
        parse_word_csv(text)


def test_parse_word_csv_bad_sources(tmp_path):
    with pytest.raises(LexiconError, match="No such word-list file"):
        parse_word_csv(tmp_path / "missing.csv")
    with pytest.raises(LexiconError, match="UTF-8"):
        parse_word_csv("en,fr\nfa\xe7ade,x\n".encode("latin-1"))
    with pytest.raises(LexiconError, match="Expected CSV text or a file path"):
        parse_word_csv(42)


def test_lexicon_error_is_value_error():
    assert issubclass(LexiconError, ValueError)


def test_parallel_pairs_on_committed_list_and_errors(concepts):
    pairs = parallel_pairs(concepts, "fr", "zh")
    assert len(pairs) == len(concepts) and pairs[0] == ("eau", "水")
    with pytest.raises(LexiconError, match="No language column 'xx'"):
        parallel_pairs(concepts, "fr", "xx")
    with pytest.raises(LexiconError, match="No language column 'concept'"):
        parallel_pairs(concepts, "concept", "fr")
