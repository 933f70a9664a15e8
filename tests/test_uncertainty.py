import math

import pytest

from rtlm_cli.prompts import uncertainty as U


def f(text):
    return U.extract(text)


def test_names_families_and_ranges():
    row = f("Explain why the sky is blue.")
    assert list(row) == list(U.ALL_COLUMNS)
    assert {x.family for x in U.FEATURES} == set(U.FAMILIES)
    assert abs(sum(U.FAMILY_WEIGHTS.values()) - 1) < 1e-9
    for name in U.FAMILY_SCORE_NAMES + ("uncertainty_score",):
        assert 0.0 <= row[name] <= 1.0


def test_empty_text_is_all_finite():
    row = f("")
    assert all(math.isfinite(v) for v in row.values())
    assert row["size_chars"] == 0


def test_open_vs_closed():
    open_ = f("Explain how photosynthesis works and why it matters. Write an essay.")
    closed = f("Who wrote Hamlet? Is it true or false that water boils at 100 C?")
    assert open_["open_task_verbs"] >= 2 and open_["open_wh"] >= 2 and open_["open_artifacts"] >= 1
    assert closed["closed_wh"] >= 1 and closed["closed_yes_no"] >= 1
    assert open_["family_open"] > 0.9 > 0.2 > closed["family_open"]


def test_numeric_asks_are_closed():
    row = f("How many legs does a spider have?")
    assert row["closed_numeric"] == 1
    assert row["open_wh"] == 1  # 'how' counts, but the numeric form outweighs it
    assert row["family_open"] < 0.5


def test_multi_part():
    text = "First, summarize the plot. Second, list the main characters.\n1. Who is the hero?\n2. Who is the villain?\nAlso, as well as that, give examples."
    row = f(text)
    assert row["multi_questions"] == 2
    assert row["multi_enum_items"] == 2
    assert row["multi_conjoined"] >= 1
    assert row["multi_ordinals"] >= 3
    assert row["family_multi"] > f("Summarize the plot.")["family_multi"]


def test_vagueness():
    vague = f("It is kind of broken, maybe fix some stuff and make it better?")
    crisp = f("Rename the variable x to count in line 3.")
    assert vague["vague_hedges"] >= 2 and vague["vague_quantifiers"] >= 2 and vague["vague_subjective"] >= 1
    assert vague["vague_starts_with_ref"] == 1 and crisp["vague_starts_with_ref"] == 0
    assert vague["family_vague"] > crisp["family_vague"]


def test_ambiguity():
    ambiguous = f("Check the bank by the spring, or the park, near the ring.")
    plain = f("Describe the photosynthesis process in chloroplasts.")
    assert ambiguous["ambig_polysemous"] >= 5 and ambiguous["ambig_or"] == 1
    assert ambiguous["ambig_polysemous_share"] > plain["ambig_polysemous_share"]
    assert ambiguous["family_ambig"] > plain["family_ambig"]


def test_structure_and_code():
    text = "Fix this. It fails because the loop, which I wrote, never ends.\n```python\nwhile True: x = {1: 2}\n```"
    row = f(text)
    assert row["struct_code_fences"] == 1
    assert row["struct_code_char_share"] > 0.02
    assert row["struct_clause_markers"] > 0
    assert row["struct_lines"] == 4
    assert row["struct_max_sentence_words"] >= row["struct_mean_sentence_words"]


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("Describe Paris in 500 words.", "constraint_words_n", 500),
        ("Describe Paris in fifty words.", "constraint_words_n", 50),
        ("Summarize it in 3 sentences.", "constraint_sentences_n", 3),
        ("Write two paragraphs on dogs.", "constraint_sentences_n", 2),
        ("List 10 ideas for a party.", "constraint_items_n", 10),
        ("Give me five examples of verbs.", "constraint_items_n", 5),
        ("Write a poem about the sea.", "constraint_items_n", 0),
    ],
)
def test_explicit_numbers(text, field, value):
    assert f(text)[field] == value


def test_brief_and_long_constraints():
    brief = f("Answer in one word: is water wet?")
    long_ = f("Explain in detail, step by step, how a compiler works.")
    assert brief["constraint_brief"] >= 1 and long_["constraint_long"] >= 2
    assert brief["family_constraint"] < 0.3 < long_["family_constraint"]
    assert brief["uncertainty_score"] < long_["uncertainty_score"]


def test_size():
    row = f("héllo wörld, this is text.")
    assert row["size_chars"] == 26 and row["size_words"] == 5
    assert row["size_non_ascii_share"] == pytest.approx(2 / 26)
    assert row["size_tokens_est"] >= row["size_words"]


def test_long_prompt_window_keeps_size_exact():
    text = "word " * 5000 + "Explain why."
    row = f(text)
    assert row["size_words"] == 5002
    assert row["open_task_verbs"] == 1  # the request at the end is inside the window
    assert row["size_tokens_est"] > 5000


def test_score_orders_crafted_prompts():
    low = f("What is 2 + 2? Answer in one word.")["uncertainty_score"]
    high = f("Write a long, creative story about some things that might happen, and also explain why. Maybe add ideas.")["uncertainty_score"]
    assert high > low + 0.2


def test_frame_matches_rows():
    texts = ["Explain why.", "Who?"]
    df = U.feature_frame(texts)
    assert list(df.columns) == list(U.ALL_COLUMNS)
    assert df.iloc[1].tolist() == U.extract_rows(texts)[1]
