"""The TinyTales world: its words, in English and Spanish, and the facts of one story.

Everything a story can mention is listed here, once, with what the two renderers need:
the English singular (plurals and "a"/"an" follow rules in `tinytales_english`), the
Spanish base form and its grammatical gender (plurals, feminine forms and agreement follow
rules in `tinytales_spanish`). A `World` picks which of these words a generator may use;
the full default world makes varied stories, and a tiny one (one name, one colour, ...)
has so few possible stories that a test can check every probability.

`Facts` is one story as data: every choice the generator made. Both languages are rendered
from it, and the summary, questions and label are read off it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Noun:
    """A noun in both languages: English singular, Spanish singular and its gender."""

    en: str
    es: str
    feminine: bool


@dataclass(frozen=True)
class Adjective:
    """An adjective: English form, Spanish masculine singular; `invariable` colour words
    (naranja, rosa) keep one form whatever they describe."""

    en: str
    es: str
    invariable: bool = False


@dataclass(frozen=True)
class Role:
    """An occupation: English noun, Spanish masculine and feminine forms."""

    en: str
    es_masculine: str
    es_feminine: str


@dataclass(frozen=True)
class Spot:
    """Where a lost thing turns up: English preposition, Spanish preposition, a noun."""

    en_preposition: str
    es_preposition: str
    noun: Noun


GROUPS = ("girl", "boy")

GIRL_NAMES = ("Mia", "Lily", "Emma", "Clara", "Ana", "Zoe", "Lucy", "Sara", "Nora", "Ella",
              "Maya", "Ruby")
BOY_NAMES = ("Tom", "Leo", "Sam", "Ben", "Max", "Hugo", "Pablo", "Jack", "Luis", "Noah",
             "Finn", "Omar")

TRAITS = {
    "kind": Adjective("kind", "amable"),
    "brave": Adjective("brave", "valiente"),
    "curious": Adjective("curious", "curioso"),
    "funny": Adjective("funny", "gracioso"),
    "shy": Adjective("shy", "tímido"),
    "clever": Adjective("clever", "listo"),
}

ROLES = {
    "doctor": Role("doctor", "médico", "médica"),
    "nurse": Role("nurse", "enfermero", "enfermera"),
    "pilot": Role("pilot", "piloto", "piloto"),
    "teacher": Role("teacher", "maestro", "maestra"),
    "baker": Role("baker", "panadero", "panadera"),
    "farmer": Role("farmer", "granjero", "granjera"),
    "builder": Role("builder", "constructor", "constructora"),
    "dancer": Role("dancer", "bailarín", "bailarina"),
    "singer": Role("singer", "cantante", "cantante"),
    "firefighter": Role("firefighter", "bombero", "bombera"),
}

# The occupational stereotype that `bias` strengthens (lesson 12 measures and removes it).
STEREOTYPED_ROLES = {
    "girl": ("nurse", "teacher", "baker", "dancer", "singer"),
    "boy": ("doctor", "pilot", "farmer", "builder", "firefighter"),
}

COLORS = {
    "red": Adjective("red", "rojo"),
    "blue": Adjective("blue", "azul"),
    "green": Adjective("green", "verde"),
    "yellow": Adjective("yellow", "amarillo"),
    "orange": Adjective("orange", "naranja", invariable=True),
    "pink": Adjective("pink", "rosa", invariable=True),
    "purple": Adjective("purple", "morado"),
}

OBJECTS = {
    "ball": Noun("ball", "pelota", True),
    "kite": Noun("kite", "cometa", True),
    "boat": Noun("boat", "barco", False),
    "doll": Noun("doll", "muñeca", True),
    "drum": Noun("drum", "tambor", False),
    "box": Noun("box", "caja", True),
    "cup": Noun("cup", "taza", True),
    "train": Noun("train", "tren", False),
    "car": Noun("car", "coche", False),
    "plane": Noun("plane", "avión", False),
    "truck": Noun("truck", "camión", False),
    "whistle": Noun("whistle", "silbato", False),
}

PLACES = {
    "park": Noun("park", "parque", False),
    "beach": Noun("beach", "playa", True),
    "forest": Noun("forest", "bosque", False),
    "garden": Noun("garden", "jardín", False),
    "school": Noun("school", "escuela", True),
    "farm": Noun("farm", "granja", True),
    "river": Noun("river", "río", False),
    "hill": Noun("hill", "colina", True),
    "lake": Noun("lake", "lago", False),
    "zoo": Noun("zoo", "zoológico", False),
}

# "One day" / "Un día": día is masculine although it ends in -a, so gender is stored.
TIMES = {
    "day": Noun("day", "día", False),
    "morning": Noun("morning", "mañana", True),
    "afternoon": Noun("afternoon", "tarde", True),
}

ANIMALS = {
    "dog": Noun("dog", "perro", False),
    "cat": Noun("cat", "gato", False),
    "monkey": Noun("monkey", "mono", False),
    "goat": Noun("goat", "cabra", True),
    "bird": Noun("bird", "pájaro", False),
    "duck": Noun("duck", "pato", False),
    "fox": Noun("fox", "zorro", False),
    "cow": Noun("cow", "vaca", True),
}

FEELINGS = {
    "sad": Adjective("sad", "triste"),
    "worried": Adjective("worried", "preocupado"),
    "scared": Adjective("scared", "asustado"),
    "angry": Adjective("angry", "enojado"),
}

PARENTS = {"mom": Noun("mom", "mamá", True), "dad": Noun("dad", "papá", False)}

# What happens to the object, and, for a happy ending, one detail of how it was solved.
PROBLEMS = ("lost", "broke", "stuck", "taken")

SPOTS = {
    "bench": Spot("under", "debajo de", Noun("bench", "banco", False)),
    "rock": Spot("behind", "detrás de", Noun("rock", "roca", True)),
    "tree": Spot("near", "cerca de", Noun("tree", "árbol", False)),
    "bush": Spot("behind", "detrás de", Noun("bush", "arbusto", False)),
}
GLUES = {  # mass nouns: "with some glue" / "con pegamento"
    "glue": Noun("glue", "pegamento", False),
    "tape": Noun("tape", "cinta", True),
    "string": Noun("string", "hilo", False),
}
REACHERS = {
    "ladder": Noun("ladder", "escalera", True),
    "stick": Noun("stick", "palo", False),
    "broom": Noun("broom", "escoba", True),
}
TREATS = {
    "apple": Noun("apple", "manzana", True),
    "cookie": Noun("cookie", "galleta", True),
    "carrot": Noun("carrot", "zanahoria", True),
    "banana": Noun("banana", "plátano", False),
}
# The detail lexicon each problem draws from when the story ends well.
DETAILS = {"lost": SPOTS, "broke": GLUES, "stuck": REACHERS, "taken": TREATS}

HELPER_KINDS = ("friend", "parent", "animal")
ENDINGS = ("happy", "sad")
OPENINGS = (0, 1, 2)  # sentence patterns, written out by each renderer
FINALS = (0, 1)  # closing sentence patterns, per ending


@dataclass(frozen=True)
class World:
    """Which words and sentence patterns a generator may use, and how often.

    Every field lists keys of the lexicons above. The defaults are the whole world; a test
    can pass a tiny world (one of each) whose few possible stories it can count.
    """

    girl_names: tuple[str, ...] = GIRL_NAMES
    boy_names: tuple[str, ...] = BOY_NAMES
    openings: tuple[int, ...] = OPENINGS
    traits: tuple[str, ...] = tuple(TRAITS)
    roles: tuple[str, ...] = tuple(ROLES)
    colors: tuple[str, ...] = tuple(COLORS)
    objects: tuple[str, ...] = tuple(OBJECTS)
    times: tuple[str, ...] = tuple(TIMES)
    places: tuple[str, ...] = tuple(PLACES)
    animals: tuple[str, ...] = tuple(ANIMALS)
    feelings: tuple[str, ...] = tuple(FEELINGS)
    parents: tuple[str, ...] = tuple(PARENTS)
    spots: tuple[str, ...] = tuple(SPOTS)
    glues: tuple[str, ...] = tuple(GLUES)
    reachers: tuple[str, ...] = tuple(REACHERS)
    treats: tuple[str, ...] = tuple(TREATS)
    finals: tuple[int, ...] = FINALS
    count_weights: tuple[float, float, float] = (0.6, 0.25, 0.15)  # one, two or three objects
    helper_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)  # friend, parent, animal
    happy_probability: float = 0.7
    stereotyped_roles: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(STEREOTYPED_ROLES)
    )

    def __post_init__(self):
        lexicons = {"traits": TRAITS, "roles": ROLES, "colors": COLORS, "objects": OBJECTS,
                    "times": TIMES, "places": PLACES, "animals": ANIMALS, "feelings": FEELINGS,
                    "parents": PARENTS, "spots": SPOTS, "glues": GLUES, "reachers": REACHERS,
                    "treats": TREATS, "openings": OPENINGS, "finals": FINALS}
        for name, lexicon in lexicons.items():
            chosen = getattr(self, name)
            unknown = [key for key in chosen if key not in lexicon]
            if not chosen or unknown or len(set(chosen)) != len(chosen):
                raise ValueError(
                    f"World.{name} must be distinct keys from {sorted(lexicon)}, got "
                    f"{chosen!r}; pick at least one known word."
                )
        if not self.girl_names or not self.boy_names:
            raise ValueError("a World needs at least one girl name and one boy name.")
        if set(self.girl_names) & set(self.boy_names):
            raise ValueError(
                f"names must belong to one group only, but "
                f"{sorted(set(self.girl_names) & set(self.boy_names))} are in both."
            )
        for weights in (self.count_weights, self.helper_weights):
            if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"weights must be 3 non-negative numbers, got {weights}.")
        if not 0.0 <= self.happy_probability <= 1.0:
            raise ValueError(f"happy_probability must be in [0, 1], got {self.happy_probability}.")
        for group in GROUPS:
            if not set(self.stereotyped_roles.get(group, ())) & set(self.roles):
                raise ValueError(
                    f"stereotyped_roles[{group!r}] must share a role with World.roles "
                    f"{self.roles}, got {self.stereotyped_roles.get(group)}."
                )

    def names(self, group: str) -> tuple[str, ...]:
        """The names of one group ("girl" or "boy")."""
        return self.girl_names if group == "girl" else self.boy_names


def group_of(name: str, world: World) -> str:
    """Which group a name belongs to in `world` ("girl" or "boy")."""
    return "girl" if name in world.girl_names else "boy"


@dataclass(frozen=True)
class Facts:
    """Every choice behind one story: who, where, which object, the problem, the ending.

    `count` is how many of `object` the hero has (1-3); `taker` is the animal that took
    them (problem "taken" only); `helper` is a friend's name, "mom"/"dad" or an animal,
    per `helper_kind`; `detail` is how the problem was solved (happy endings only): a spot,
    a glue, a reacher or a treat; `opening` and `final` number the sentence patterns.
    """

    name: str
    group: str
    opening: int
    trait: str
    role: str
    count: int
    color: str
    object: str
    time: str
    place: str
    problem: str
    taker: str | None
    feeling: str
    helper_kind: str
    helper: str
    helper_group: str | None
    ending: str
    detail: str | None
    final: int
    role_is_stereotyped: bool

    @property
    def plural(self) -> bool:
        """Whether the hero has more than one of the object."""
        return self.count > 1
