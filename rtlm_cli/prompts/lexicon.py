"""Word lists behind the uncertainty features (feature set 1).

Hand-curated for English chat prompts; no external lexicon is needed at run time. The polysemy list
holds common English words that carry several unrelated everyday senses (each has five or more
senses in standard dictionaries, e.g. "bank", "set", "run"), chosen because they appear in chat
prompts. Changing any list changes feature values: bump ``FEATURE_SET_VERSION`` in uncertainty.py.
"""

OPEN_TASK_VERBS = frozenset(
    """explain describe discuss elaborate write create compose generate draft design develop plan
    brainstorm imagine suggest propose outline expand tell teach introduce explore analyze analyse
    evaluate critique review argue justify illustrate narrate invent story essay continue""".split()
)
OPEN_ARTIFACTS = frozenset(
    """essay story article blog post poem song lyrics script letter email speech report proposal
    chapter novel plan guide tutorial code program function app application website script""".split()
)
OPEN_WH = frozenset("why how".split())
CLOSED_WH = frozenset("who when which where whom whose".split())
CLOSED_TASK_VERBS = frozenset(
    """translate correct fix classify convert extract choose pick select calculate compute solve
    identify name spell define count rate label format""".split()
)
YES_NO_STARTS = frozenset(
    "is are do does did can could will would should was were has have am shall may".split()
)
HEDGES = frozenset(
    """maybe perhaps possibly probably somewhat roughly approximately around about likely
    might guess think suppose somehow""".split()
)
VAGUE_QUANTIFIERS = frozenset(
    """some several many few various lots lot bunch numerous plenty stuff things etc anything
    something whatever more""".split()
)
VAGUE_SUBJECTIVE = frozenset(
    """best good better great nice cool interesting creative amazing awesome fun useful
    effective unique engaging""".split()
)
UNDERSPECIFIED_REFS = frozenset("it this that these those they them its".split())
ORDINALS = frozenset("first second third fourth fifth next then finally lastly also additionally".split())
LIST_NOUNS = frozenset(
    "list steps ways examples ideas tips reasons options points questions names items".split()
)
SUBORDINATORS = frozenset(
    """because although though which that if when while whereas unless since whether
    where who whom whose after before until""".split()
)
POLYSEMOUS = frozenset(
    """bank set run light right play model table order charge case type scale program draw
    fair bear bat bark match spring fall pitch ring bow lead watch point field state class
    object function value key note mean date cell lie park rock seal tie trip wave press
    express bill check change close content cover cross deal drive figure fire form frame
    head interest issue kind last line lock mark mine mind net nail organ plant plot post
    pound power present race range rest right root round rule save second show sign sink
    space stand step stick store strike table tap term test tip track train trunk turn
    well will yard current bond book board bolt bug cast chip club coach code column court
    crane date degree file fine firm flat fly foot glass grade ground hand hard iron jam
    jar kid land leaves letter level lift log long mass matter medium miss mold monitor
    mouse net novel palm patient pen pipe pool port pupil quarter radical record register
    release return ring run sentence shell sole spirit square stable staff stamp star
    stock suit swing tank temple tender tire top vessel volume watch window""".split()
)
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50,
    "hundred": 100, "single": 1, "few": 3, "couple": 2,
}
# Single-word cues, counted in the same word pass as the lists above.
BRIEF_WORDS = frozenset("briefly brief concise concisely tl;dr tldr shortly succinct succinctly".split())
LONG_WORDS = frozenset(
    "detailed comprehensive thorough thoroughly elaborate extensive extensively lengthy".split()
)
CONJOINED_WORDS = frozenset("additionally furthermore moreover plus".split())
OR_WORDS = frozenset(["or", "either", "versus", "vs"])
# Multi-word phrases matched on lower-cased text in one regex pass; each key becomes a named group.
PHRASES = {
    "brief": r"in (?:one|a single|a) word|one[- ]word|yes or no|true or false|short answer|in short|"
    r"just (?:the|give|say|answer)|only (?:the|answer|say|reply|respond)|(?:one|a single|1) (?:sentence|line)|"
    r"keep it short|no explanation|without explanation",
    "long": r"in detail|in[- ]depth|step[- ]by[- ]step|at length|full (?:article|essay|story|code)|"
    r"complete (?:code|guide)|long (?:essay|article|story|answer|response)",
    "conjoined": r"and also|as well as|in addition|and then|along with",
    "hedge_phrase": r"kind of|sort of|i think|i guess|i believe|not sure|more or less|or something",
    "closed_numeric": r"how many|how much|how old|how long (?:is|does|did|was)|what percentage|"
    r"what is the (?:value|number|total|sum|name|capital|date)",
}
