"""SCDG parsing and validation, prompts: pure functions, hand-written LLM outputs (good and bad)."""

from __future__ import annotations

import pytest

from tkre.data.records import RelationExample
from tkre.generate import parse, validate
from tkre.generate.explanations import strip_preamble
from tkre.generate.prompts import as_chat_text, edkg_prompt, scdg_example_block, scdg_prompt

REL = "Cause-Effect(e1,e2)"


def _ex(text: str, subj: tuple[int, int], obj: tuple[int, int], rel: str = REL, st=None, ot=None) -> RelationExample:
    toks = tuple(text.split())
    return RelationExample(id=f"g{hash(text) & 0xffff}", tokens=toks, subj_start=subj[0], subj_end=subj[1],
                           obj_start=obj[0], obj_end=obj[1], relation=rel, subj_type=st, obj_type=ot)


GOLDEN = [_ex("the burst was caused by water hammer pressure .", (1, 2), (7, 8))]


def _sample(context: str, head: str, tail: str, rel: str = REL, ht: str = "", tt: str = "") -> str:
    return (f"Relation: {rel}.\nContext: {context}\nHead Entity: {head}.\nHead Type: {ht}.\n"
            f"Tail Entity: {tail}.\nTail Type: {tt}.\n")


def _validator(type_pairs=None, golden=GOLDEN):
    return validate.SampleValidator(golden, type_pairs or {}, source="synthetic:test")


def test_good_semeval_sample_is_accepted_with_exact_token_offsets():
    text = "Sure! Here are 2 more samples:\n\n" + _sample("The fire was caused by a short circuit.", "fire",
                                                            "short circuit")
    [o] = _validator().validate_completion(text, REL)
    assert o.reason is None and o.example is not None
    ex = o.example
    assert ex.tokens == ("The", "fire", "was", "caused", "by", "a", "short", "circuit", ".")
    assert (ex.subj_start, ex.subj_end, ex.obj_start, ex.obj_end) == (1, 2, 6, 8)
    assert ex.subject == "fire" and ex.object == "short circuit"
    assert ex.subj_type is None and ex.obj_type is None  # SemEval: no types
    assert ex.source == "synthetic:test" and ex.relation == REL and ex.problems() == []


def test_several_samples_one_line_format_and_numbering():
    one_line = ("1. Relation: Cause-Effect(e1,e2). Context: the smoke came from the burning tyres . Head Entity: "
                "smoke. Head Type: . Tail Entity: tyres. Tail Type: .\n"
                "2. Relation: Cause-Effect(e1,e2). Context: his cough was triggered by dust . Head Entity: cough. "
                "Head Type: . Tail Entity: dust. Tail Type: .")
    outs = _validator().validate_completion(one_line, REL)
    assert [o.reason for o in outs] == [None, None]
    assert [(o.example.subject, o.example.object) for o in outs] == [("smoke", "tyres"), ("cough", "dust")]


def test_entity_match_is_case_insensitive_and_keeps_context_case():
    [o] = _validator().validate_completion(_sample("Heavy Rain caused the Flood.", "heavy rain", "flood"), REL)
    assert o.example.subject == "Heavy Rain" and o.example.object == "Flood"


@pytest.mark.parametrize("text,reason", [
    ("", parse.EMPTY_OUTPUT),
    ("   \n ", parse.EMPTY_OUTPUT),
    (None, parse.EMPTY_OUTPUT),
    ("I am sorry, I cannot help with relations today. 12345 %%%", parse.UNPARSEABLE),
    ("Relation: Cause-Effect(e1,e2).\nContext: the storm caused dam", parse.TRUNCATED),
    ("Relation: Cause-Effect(e1,e2). Head Entity: x. Head Type: . Tail Entity: y. Tail Type: .\n"
     "Relation: Cause-Effect(e1,e2). Context: a b c", parse.MISSING_FIELD),
])
def test_garbage_empty_and_truncated_output_is_rejected_with_a_reason(text, reason):
    outs = _validator().validate_completion(text, REL)
    assert outs and all(o.example is None for o in outs)
    assert outs[0].reason == reason


def test_truncated_last_sample_does_not_spoil_earlier_ones():
    text = _sample("the crash was caused by ice .", "crash", "ice") + "Relation: Cause-Effect(e1,e2).\nContext: the"
    outs = _validator().validate_completion(text, REL)
    assert [o.reason for o in outs] == [None, parse.TRUNCATED]


@pytest.mark.parametrize("head,tail,reason", [
    ("volcano", "ash", parse.SUBJECT_NOT_IN_CONTEXT),
    ("smoke", "volcano", parse.OBJECT_NOT_IN_CONTEXT),
    ("smo", "fire", parse.SUBJECT_NOT_IN_CONTEXT),  # partial token is not a mention
    ("", "fire", parse.EMPTY_FIELD),
    ("fire", "fire", parse.ENTITIES_OVERLAP),
])
def test_entities_must_occur_in_context(head, tail, reason):
    [o] = _validator().validate_completion(_sample("the smoke came from a fire .", head, tail), REL)
    assert o.example is None and o.reason == reason


def test_wrong_relation_is_rejected():
    [o] = _validator().validate_completion(_sample("the smoke came from a fire .", "smoke", "fire",
                                                   rel="Component-Whole(e1,e2)"), REL)
    assert o.reason == parse.WRONG_RELATION and "Component-Whole" in o.detail


def test_relation_name_comparison_ignores_spaces_case_and_decoration():
    [o] = _validator().validate_completion(_sample("the smoke came from a fire .", "smoke", "fire",
                                                   rel="**cause-effect (e1, e2)**"), REL)
    assert o.reason is None


def test_repeated_mentions_resolve_deterministically_to_the_closest_pair():
    ctx = "the dog saw a big cat , and later the cat chased the dog away ."
    [o] = _validator().validate_completion(_sample(ctx, "cat", "dog"), REL)
    toks = o.example.tokens
    # cat at 5 and 10, dog at 1 and 13: the closest non-overlapping pair is cat@10 / dog@13
    assert (o.example.subj_start, o.example.obj_start) == (10, 13)
    assert toks[10] == "cat" and toks[13] == "dog"
    # same answer every time, independent of validator state
    [again] = _validator().validate_completion(_sample(ctx, "cat", "dog"), REL)
    assert again.example == o.example
    assert validate.choose_pair([(0, 1), (6, 7)], [(3, 4)]) == ((0, 1), (3, 4))  # tie -> earliest head


def test_duplicates_of_golden_and_of_earlier_synthetic_are_rejected():
    v = _validator()
    golden_copy = _sample("The burst was caused by water hammer pressure .", "burst", "pressure")
    new = _sample("the leak was caused by rust .", "leak", "rust")
    outs = v.validate_completion(golden_copy + new + new, REL)
    assert [o.reason for o in outs] == [parse.DUPLICATE_GOLDEN, None, parse.DUPLICATE_SYNTHETIC]


TACRED_PAIRS = {"per:city_of_birth": [["PERSON", "CITY"]], "org:founded_by": [["ORGANIZATION", "PERSON"]]}
TACRED_GOLD = [_ex("Bill was born in Seattle .", (0, 1), (4, 5), rel="per:city_of_birth", st="PERSON", ot="CITY")]


@pytest.mark.parametrize("ht,tt,reason", [
    ("PERSON", "CITY", None),
    ("person", "city", None),  # case of the type name does not matter
    ("PERSON", "PLANET", parse.UNKNOWN_TYPE),
    ("ORGANIZATION", "PERSON", parse.TYPE_PAIR_NOT_IN_SCHEMA),
    ("", "CITY", parse.MISSING_TYPE),
])
def test_type_pair_must_be_in_the_relations_schema(ht, tt, reason):
    v = _validator(TACRED_PAIRS, TACRED_GOLD)
    [o] = v.validate_completion(_sample("Ada was born in London .", "Ada", "London", rel="per:city_of_birth",
                                        ht=ht, tt=tt), "per:city_of_birth")
    assert o.reason == reason
    if reason is None:
        assert (o.example.subj_type, o.example.obj_type) == ("PERSON", "CITY")


def _untyped(context: str, head: str, tail: str, rel: str = REL) -> str:
    return f"Relation: {rel}.\nContext: {context}\nHead Entity: {head}.\nTail Entity: {tail}.\n"


def test_type_lines_are_optional_for_untyped_datasets():
    """SemEval has no types: samples without Head Type / Tail Type lines are read, not `missing_field`."""
    text = (_untyped("the smoke came from a fire .", "smoke", "fire")
            + "Relation: Cause-Effect(e1,e2). Context: his cough was triggered by dust . Head Entity: cough. "
              "Tail Entity: dust.")
    outs = _validator().validate_completion(text, REL)
    assert [o.reason for o in outs] == [None, None]
    assert [(o.example.subject, o.example.object) for o in outs] == [("smoke", "fire"), ("cough", "dust")]
    # a typed dataset still needs the types: the sample is read, then rejected for its missing type
    [typed] = _validator(TACRED_PAIRS, TACRED_GOLD).validate_completion(
        _untyped("Ada was born in London .", "Ada", "London", rel="per:city_of_birth"), "per:city_of_birth")
    assert typed.reason == parse.MISSING_TYPE


def test_type_names_are_normalised_like_the_reference_code():
    pairs = {"per:stateorprovince_of_birth": [["PERSON", "STATE_OR_PROVINCE"]],
             "per:title": [["PERSON", "TITLE"], ["MISC", "TITLE"]]}
    gold = [_ex("Bill was born in Ohio .", (0, 1), (4, 5), rel="per:stateorprovince_of_birth", st="PERSON",
                ot="STATE_OR_PROVINCE")]
    v = _validator(pairs, gold)
    [o] = v.validate_completion(_sample("Ada was born in Texas .", "Ada", "Texas", rel="per:stateorprovince_of_birth",
                                        ht="Person", tt="STATE OR PROVINCE"), "per:stateorprovince_of_birth")
    assert o.reason is None and (o.example.subj_type, o.example.obj_type) == ("PERSON", "STATE_OR_PROVINCE")
    [m] = v.validate_completion(_sample("the Oscar winner became a director .", "Oscar winner", "director",
                                        rel="per:title", ht="MISCELLANEOUS", tt="title"), "per:title")
    assert m.reason is None and m.example.subj_type == "MISC"  # alias -> the dataset's spelling
    assert validate.normalise_type(" state-or_province. ") == "STATE_OR_PROVINCE"


@pytest.mark.parametrize("raw,clean", [
    ("Sure! Here is an explanation of why \"burst\" has the relation:\n\nThe text says the burst came from "
     "pressure.", "The text says the burst came from pressure."),
    ("Sure!\nThe burst came from pressure.", "The burst came from pressure."),
    ("Certainly. Here's why the burst relates to pressure.\nThe burst came from pressure.",
     "The burst came from pressure."),
    ("Sure! The burst came from pressure.", "The burst came from pressure."),
    ("The burst came from pressure.\nSure enough, it did.", "The burst came from pressure.\nSure enough, it did."),
    ("Here is the explanation: the burst came from pressure.", "the burst came from pressure."),
    ("Sure!", "Sure!"),  # nothing but a preamble: kept rather than emptied
])
def test_chat_preamble_is_stripped_from_explanations(raw, clean):
    assert strip_preamble(raw) == clean


def test_semeval_skips_type_check_even_with_type_text():
    [o] = _validator().validate_completion(_sample("the smoke came from a fire .", "smoke", "fire",
                                                   ht="GAS", tt="EVENT"), REL)
    assert o.reason is None and o.example.subj_type is None


def test_no_bad_record_can_pass():
    garbage = ["Relation: x", "Context: y", "Relation: Cause-Effect(e1,e2). Context: . Head Entity: . Head Type: . "
               "Tail Entity: . Tail Type: .", _sample("a b", "a", "b") * 3, "Relation:" * 50]
    v = _validator()
    for text in garbage:
        for o in v.validate_completion(text, REL):
            assert (o.example is None) != (o.reason is None)
            if o.example is not None:
                assert o.example.problems() == []


# ------------------------------------------------------------------------------------------ prompts

def test_edkg_prompt_names_text_entities_and_relation():
    p = edkg_prompt(GOLDEN[0])
    for part in ("the burst was caused by water hammer pressure .", '"burst"', '"pressure"', REL):
        assert part in p
    # paper-length explanations: the prompt sets no length (the reference code's does not either)
    assert "sentence" not in p.lower() and "brief" not in p.lower() and "short" not in p.lower()


def test_scdg_prompt_shows_examples_in_schema_and_asks_for_n():
    p = scdg_prompt(REL, GOLDEN * 2, 5)
    assert p.count("Head Entity: burst.") == 2 and "Generate 5 more samples" in p
    assert "Head Type: ." in p  # SemEval: empty type lines
    block = scdg_example_block(TACRED_GOLD[0])
    assert "Head Type: PERSON." in block and "Tail Type: CITY." in block
    # the prompt's own examples parse back into the records they came from
    [o] = _validator(TACRED_PAIRS, []).validate_completion(block, "per:city_of_birth")
    assert o.example.tokens == TACRED_GOLD[0].tokens and o.example.subject == "Bill"


def test_templates_are_overridable_from_config():
    assert edkg_prompt(GOLDEN[0], "WHY {subject} {relation} {object}? {text}") == f"WHY burst {REL} pressure? " \
                                                                                 f"{GOLDEN[0].text}"
    assert scdg_prompt(REL, GOLDEN, 3, "{relation}|{n}|{examples}").startswith(f"{REL}|3|Relation: {REL}.")
    assert scdg_prompt(REL, GOLDEN, 3, "{examples}", "<{subject}>") == "<burst>"


class _Tok:
    chat_template = None


class _ChatTok:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + ("|assistant:" if add_generation_prompt else "")


def test_chat_template_is_used_when_the_tokenizer_has_one():
    assert as_chat_text(_Tok(), "hi") == "hi"
    assert as_chat_text(_Tok(), "hi", "sys") == "sys\n\nhi"
    assert as_chat_text(_ChatTok(), "hi", "sys") == "system:sys|user:hi|assistant:"
