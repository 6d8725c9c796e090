"""The paper's templates (appendix A.2) rendered word for word, and the answer format."""

import pytest

from recnb import prompts
from recnb.answer import format_item_list
from recnb.tasks import INTENT_KIND


def test_i0_renders_listing_1_word_for_word():
    text = prompts.render_instruction("I0", 3, ["Heat (1995)", "Fargo (1996)"])
    assert text == (
        "You are an expert recommender engine. You need to generate a recommendation list considering "
        "user's preference from historical interactions. The historical interactions are provided as "
        "follows: 'Heat (1995)', 'Fargo (1996)'. You need to generate a recommendation list with 3 "
        "different items."
    )


def test_i1_candidate_variant_renders_listing_2_with_negative_phrase():
    text = prompts.render_instruction("I1-C", 2, ["A"], "Drama", candidates=["X", "Y", "Z"], phrase_index=3)
    assert text == (
        "You are an expert recommender engine. You need to select a recommendation list from candidate "
        "items simultaneously considering user's preference inferred from historical interactions and "
        "user's intention. If user's preference conflicts with his intention, you should comply with his "
        "intention. Here are user's historical interactions: 'A', and user's intention: Don't recommend me "
        "any 'Drama' products. The candidate items are: 'X', 'Y', 'Z'. You need to select a "
        "recommendation list with 2 different items from candidate items."
    )


@pytest.mark.parametrize(
    "task, words", [("I2<=", "less than or equal to"), ("I2>=", "more than or equal to"), ("I2~=", "approximately")]
)
def test_i2_renders_listing_3(task, words):
    text = prompts.render_instruction(task, 10, ["A", "B"], "Comedy", m=0.3)
    assert text == (
        "You are an expert recommender engine. You need to generate a recommendation list simultaneously "
        "considering user's preference inferred from historical interactions and user's intention. Here "
        "are user's historical interactions: 'A', 'B', and user's intention: In the recommendation list, "
        f"the proportion of 'Comedy' items should be {words} 30%. You need to generate a recommendation "
        "list with 10 different items."
    )


def test_i3_ignores_history_and_uses_positive_phrase():
    text = prompts.render_instruction("I3+C", 4, ["ignored"], "Action", phrase_index=5)
    assert text == (
        "You are an expert recommender engine. You need to generate a recommendation list complying "
        "user's intention. Here is user's intention: I prefer in 'Action' item. Please generate a "
        "recommendation list with 4 different items."
    )


def test_six_positive_and_six_negative_intentions_of_listings_5_and_6():
    assert len(prompts.POSITIVE_INTENTIONS) == len(prompts.NEGATIVE_INTENTIONS) == 6
    assert prompts.intention_phrase(True, "Horror", 0) == "I like 'Horror' products"
    assert prompts.intention_phrase(True, "Horror", 2) == "I'm interested in 'Horror'"
    assert prompts.intention_phrase(False, "Horror", 4) == "I don't want to browse any 'Horror' product"
    assert prompts.intention_phrase(False, "Horror", 5) == "I hate 'Horror' items"
    assert prompts.intention_phrase(False, "Horror", 11) == prompts.intention_phrase(False, "Horror", 5)


def test_every_template_opens_with_the_system_prompt():
    for generate, select in prompts.TEMPLATES.values():
        assert generate.startswith(prompts.SYSTEM_PROMPT + " ")
        assert select is None or select.startswith(prompts.SYSTEM_PROMPT + " ")


def test_chat_messages_move_the_system_sentence_to_the_system_role():
    msgs = prompts.chat_messages(prompts.render_instruction("I0", 1, ["A"]))
    assert msgs[0] == {"role": "system", "content": "You are an expert recommender engine."}
    assert msgs[1]["role"] == "user"
    assert msgs[1]["content"].startswith("You need to generate a recommendation list considering")
    with pytest.raises(ValueError, match="system prompt"):
        prompts.chat_messages("Hello there.")


def test_answer_and_history_formats():
    assert format_item_list(["Heat (1995)", "Fargo (1996)"]) == "1. Heat (1995)\n2. Fargo (1996)"
    assert prompts.quote_titles(["Heat (1995)", "Fargo (1996)"]) == "'Heat (1995)', 'Fargo (1996)'"
    assert [prompts.format_proportion(m) for m in (0.1, 0.2, 0.3, 0.5, 0.7)] == ["10%", "20%", "30%", "50%", "70%"]


def test_render_rejects_impossible_requests():
    with pytest.raises(ValueError, match="no candidate-list template"):
        prompts.render_instruction("I2<=", 10, ["A"], "Drama", 0.2, candidates=["B"])
    with pytest.raises(ValueError, match="needs a target category"):
        prompts.render_instruction("I1+C", 10, ["A"])
    with pytest.raises(ValueError, match="proportion m"):
        prompts.render_instruction("I2~=", 10, ["A"], "Drama", m=1.5)
    with pytest.raises(ValueError, match="no recommendation template"):
        prompts.render_instruction("I4", 1)


def test_template_family_and_intent_kinds():
    assert prompts.template_family("I1+C") == "I1"
    assert prompts.template_family("I3-C") == "I3"
    assert prompts.template_family("I2>=") == "I2>="
    assert INTENT_KIND["I3-C"] == "-C" and INTENT_KIND["I2~="] == "~="
