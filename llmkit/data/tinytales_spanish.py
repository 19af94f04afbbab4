"""Spanish rendering of a TinyTales story, by grammar rules rather than stored sentences.

The lexicon gives only base forms (noun singular and gender, adjective masculine singular,
verb infinitive); the rules below build the rest, as a Spanish grammar book states them:

- plural of nouns and adjectives: add -s after a vowel, -es after a consonant, and drop
  the written accent that the longer word no longer needs (camión -> camiones);
- agreement: articles and adjectives take the gender and number of their noun
  (una pelota roja, dos barcos rojos, tres cajas azules); a few colour words are invariable;
- object pronouns agree with what they stand for (la perdió, los perdió), also when joined
  to an infinitive (no pudieron encontrarla);
- a + el = al, de + el = del;
- verbs conjugate in the preterite and imperfect, third person singular or plural, from
  their infinitive (perder -> perdió, romper -> se rompieron), with the few irregular
  verbs of the stories listed.

`spanish_sentences(facts)` returns one sentence per English sentence, in the same order.
"""

from __future__ import annotations

from llmkit.data.tinytales_world import (
    ANIMALS, COLORS, FEELINGS, GLUES, OBJECTS, PARENTS, PLACES, REACHERS, ROLES, SPOTS, TIMES,
    TRAITS, TREATS, Adjective, Facts, Noun,
)

_ACCENTS = str.maketrans("áéíóú", "aeiou")
NUMBER_WORDS = {2: "dos", 3: "tres"}


def _drop_final_accent(word: str) -> str:
    """camión -> camion: a written accent on the last syllable goes once one is added."""
    return word[:-2] + word[-2:].translate(_ACCENTS)


def plural(word: str) -> str:
    """Plural of a noun or adjective: pelota -> pelotas, tren -> trenes, camión -> camiones."""
    if word[-1] in "aeiouáéó":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    return _drop_final_accent(word) + "es"


def adjective(adj: Adjective, feminine: bool, is_plural: bool) -> str:
    """An adjective agreeing with its noun: rojo, roja, rojos, rojas; azul, azules; naranja."""
    if adj.invariable:
        return adj.es
    form = adj.es[:-1] + "a" if feminine and adj.es.endswith("o") else adj.es
    return plural(form) if is_plural else form


def article(definite: bool, feminine: bool, is_plural: bool) -> str:
    """el/la/los/las or un/una/unos/unas."""
    if definite:
        return ("las" if feminine else "los") if is_plural else ("la" if feminine else "el")
    return ("unas" if feminine else "unos") if is_plural else ("una" if feminine else "un")


def with_preposition(preposition: str, phrase: str) -> str:
    """Join a preposition to a phrase, contracting a + el -> al and de + el -> del."""
    if phrase.startswith("el ") and preposition in ("a", "de"):
        return preposition + "l " + phrase[3:]
    return f"{preposition} {phrase}"


def noun_phrase(noun: Noun, definite: bool = False, is_plural: bool = False,
                adj: Adjective | None = None, count: int | None = None) -> str:
    """'una pelota roja', 'dos pelotas rojas', 'el parque', 'la escalera'.

    With `count` > 1 a number word replaces the article, as in Spanish: 'tres cajas'."""
    word = plural(noun.es) if is_plural else noun.es
    if adj is not None:
        word += " " + adjective(adj, noun.feminine, is_plural)
    if count is not None and count > 1:
        return f"{NUMBER_WORDS[count]} {word}"
    return f"{article(definite, noun.feminine, is_plural)} {word}"



def object_pronoun(feminine: bool, is_plural: bool) -> str:
    """The direct-object pronoun: lo, la, los, las."""
    return ("las" if feminine else "los") if is_plural else ("la" if feminine else "lo")


def stressed_pronoun(feminine: bool, is_plural: bool) -> str:
    """The pronoun after a preposition: él, ella, ellos, ellas (con ella)."""
    return ("ellas" if feminine else "ellos") if is_plural else ("ella" if feminine else "él")


# Irregular forms the stories use; every other verb follows the regular endings.
_IRREGULAR_PRETERITE = {
    "dar": ("dio", "dieron"), "sentir": ("sintió", "sintieron"), "ir": ("fue", "fueron"),
    "venir": ("vino", "vinieron"), "poder": ("pudo", "pudieron"),
    "sonreír": ("sonrió", "sonrieron"),
}
_IRREGULAR_IMPERFECT = {"ser": ("era", "eran"), "ir": ("iba", "iban")}


def preterite(infinitive: str, is_plural: bool = False) -> str:
    """Third-person preterite: perder -> perdió, buscar -> buscaron, venir -> vino."""
    if infinitive in _IRREGULAR_PRETERITE:
        return _IRREGULAR_PRETERITE[infinitive][is_plural]
    stem, ending = infinitive[:-2], infinitive[-2:]
    if ending == "ar":
        return stem + ("aron" if is_plural else "ó")
    return stem + ("ieron" if is_plural else "ió")


def imperfect(infinitive: str, is_plural: bool = False) -> str:
    """Third-person imperfect: tener -> tenía, estar -> estaba, ser -> era."""
    if infinitive in _IRREGULAR_IMPERFECT:
        return _IRREGULAR_IMPERFECT[infinitive][is_plural]
    stem, ending = infinitive[:-2], infinitive[-2:]
    if ending == "ar":
        return stem + ("aban" if is_plural else "aba")
    return stem + ("ían" if is_plural else "ía")


# Words the sentence patterns use besides the lexicon's, as base forms to inflect.
CHILD = {"girl": Noun("girl", "niña", True), "boy": Noun("boy", "niño", False)}
NAMED = Adjective("named", "llamado")
LITTLE = Adjective("little", "pequeño")
NAUGHTY = Adjective("naughty", "travieso")
KIND = Adjective("kind", "amable")
STUCK = Adjective("stuck", "atascado")
HIGH = Adjective("high", "alto")


def spanish_sentences(facts: Facts) -> list[str]:
    """The story in Spanish, one sentence per English sentence, in the same order."""
    girl, many, name = facts.group == "girl", facts.plural, facts.name
    child, obj = CHILD[facts.group], OBJECTS[facts.object]
    them = object_pronoun(obj.feminine, many)
    named = adjective(NAMED, girl, False)
    role = ROLES[facts.role]
    opening = (
        f"Érase una vez {noun_phrase(child, adj=LITTLE)} {named} {name}.",
        f"{imperfect('haber').capitalize()} {noun_phrase(child)} {named} {name}.",
        f"{name} {imperfect('ser')} {noun_phrase(child)} que {imperfect('vivir')} en "
        f"un pueblo pequeño.",
    )[facts.opening]
    things = "sus " + plural(obj.es) if many else "su " + obj.es
    place = noun_phrase(PLACES[facts.place], definite=True)
    sentences = [
        opening,
        f"{imperfect('ser').capitalize()} muy {adjective(TRAITS[facts.trait], girl, False)}.",
        f"De mayor, {imperfect('querer')} ser {role.es_feminine if girl else role.es_masculine}.",
        f"{name} {imperfect('tener')} "
        f"{noun_phrase(obj, is_plural=many, adj=COLORS[facts.color], count=facts.count)}.",
        f"{noun_phrase(TIMES[facts.time]).capitalize()}, {preterite('llevar')} {things} "
        f"{with_preposition('a', place)}.",
        _problem(facts, them),
        f"{name} se {preterite('sentir')} {adjective(FEELINGS[facts.feeling], girl, False)}.",
        f"Entonces {_helper(facts)} {preterite('venir')} a ayudar.",
    ]
    if facts.ending == "happy":
        sentences.append(_happy_solution(facts, them))
        sentences.append((f"{name} {imperfect('estar')} feliz otra vez.",
                          f"{name} {preterite('sonreír')} y {preterite('dar')} las gracias.",
                          )[facts.final])
    else:
        sentences.append(_sad_outcome(facts, them))
        sentences.append((f"{name} {imperfect('estar')} triste, pero {preterite('aprender')} "
                          f"a tener más cuidado.",
                          f"{name} {preterite('llorar')} un poco y luego se {preterite('ir')} "
                          f"a casa.")[facts.final])
    return sentences


def _problem(facts: Facts, them: str) -> str:
    """What went wrong: the verb agrees with the things, the pronoun stands for them."""
    obj, many = OBJECTS[facts.object], facts.plural
    the_things = noun_phrase(obj, definite=True, is_plural=many)
    if facts.problem == "lost":
        return f"Pero {them} {preterite('perder')}."
    if facts.problem == "broke":
        return f"Pero {the_things} se {preterite('romper', many)}."
    if facts.problem == "stuck":
        return (f"Pero {the_things} se {preterite('quedar', many)} "
                f"{adjective(STUCK, obj.feminine, many)} en un árbol.")
    naughty = noun_phrase(ANIMALS[facts.taker], adj=NAUGHTY)
    return f"Pero {naughty} se {them} {preterite('llevar')}."


def _sad_outcome(facts: Facts, them: str) -> str:
    """Why the problem stayed: pronouns join the infinitive (no pudieron encontrarla)."""
    obj, many = OBJECTS[facts.object], facts.plural
    could_not = f"no {preterite('poder', True)}"
    if facts.problem == "lost":
        return (f"{preterite('buscar', True).capitalize()} por todas partes, pero {could_not} "
                f"encontrar{them}.")
    if facts.problem == "broke":
        return f"{preterite('intentar', True).capitalize()} arreglar{them}, pero {could_not}."
    if facts.problem == "stuck":
        return (f"{preterite('intentar', True).capitalize()} bajar{them}, pero "
                f"{imperfect('estar', many)} demasiado {adjective(HIGH, obj.feminine, many)}.")
    taker = noun_phrase(ANIMALS[facts.taker], definite=True)
    return (f"{taker.capitalize()} se {preterite('escapar')} con "
            f"{stressed_pronoun(obj.feminine, many)}.")


def _helper(facts: Facts) -> str:
    """'su amiga Lily', 'su papá', 'un perro amable'."""
    if facts.helper_kind == "friend":
        return f"su {'amiga' if facts.helper_group == 'girl' else 'amigo'} {facts.helper}"
    if facts.helper_kind == "parent":
        return f"su {PARENTS[facts.helper].es}"
    return noun_phrase(ANIMALS[facts.helper], adj=KIND)


def _happy_solution(facts: Facts, them: str) -> str:
    """How the problem was solved, agreeing with the object's gender and number."""
    if facts.problem == "lost":
        spot = SPOTS[facts.detail]
        return (f"{preterite('buscar', True).capitalize()} por todas partes y {them} "
                f"{preterite('encontrar', True)} {spot.es_preposition} "
                f"{noun_phrase(spot.noun)}.")
    if facts.problem == "broke":
        return f"{them.capitalize()} {preterite('arreglar', True)} con {GLUES[facts.detail].es}."
    if facts.problem == "stuck":
        return (f"{them.capitalize()} {preterite('bajar', True)} con "
                f"{noun_phrase(REACHERS[facts.detail])}.")
    treat = noun_phrase(TREATS[facts.detail])
    taker = ANIMALS[facts.taker]
    to_animal = with_preposition("a", noun_phrase(taker, definite=True))
    return (f"Le {preterite('dar', True)} {treat} {to_animal}, y "
            f"{noun_phrase(taker, definite=True)} {them} {preterite('devolver')}.")
