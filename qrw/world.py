"""The synthetic e-commerce world: catalog, lexicon, intents, queries, search logs, the oracle judge.

Everything the paper learns from (JD.com search logs, product titles, human
relevance labels) is replaced here by a world generated from one seed, so that
every number qrw reports can be reproduced and every component unit-tested.
"Relevance Matters" (Dai et al., arXiv 2603.02555) rewrites queries to bridge the
*lexical gap* between how shoppers type and how products are described; this
module builds that gap on purpose:

- **Catalog**: ``n_products`` products over the categories of the hand-written
  table ``CATEGORIES`` (38 categories: phones, laptops, sneakers, fridges, ...).
  A product has a category, a brand, one value for each attribute of its
  category (colour, storage, screen, gender, size, material, ...), a price and a
  popularity that is Zipf-like within its category. Titles use *catalog
  vocabulary* only (canonical terms, lowercase, whitespace tokens), e.g.
  ``"samsung ultra television 55 inch 4k"``.
- **Lexicon**: every canonical term (category, brand, attribute value) has user
  variants in tiers ``common`` / ``rare`` / ``log_only`` ("tv", "telly",
  "flatscreen" for television; "blk" for black; "128 gb", "128g" for 128gb;
  "mens", "for men" for men). No variant phrase ever appears in a title, so a
  query typed in user vocabulary does not reach its products by word match.
  ``log_only`` variants occur in search logs and val/test queries but never in
  training queries: a rewriter can only learn them from stage-0 pretraining.
- **Intent**: category + optional brand + a subset of attribute values. Query
  intents are drawn from real products, so every query has >= 1 exact product.
- **Query**: the intent rendered in user vocabulary with noise (variant
  substitution, typos, fillers such as "cheap", connectors such as "in"/"with"
  that may be dropped, reordering). The world never drops a content word: the
  intent must stay recoverable from the text (the judge parses it back, and a
  test checks ``judge.parse(query.text) == query.intent`` for every query).
  Splits are by *(intent, variant combination)*: train/val/test share none, and
  any combination that uses a log-only variant is kept out of train. Each query
  carries a difficulty segment by its number of rare variants, log-only
  variants and typos: ``head`` (0), ``torso`` (1), ``tail`` (>= 2).
- **Gold rewrite**: the intent in catalog vocabulary, ``brand category values``.
- **Relevance examples**: perturbed rewrites with labels 2 (gold, reordered), 1
  (brand or an attribute dropped, broadened to the category, or narrowed by an
  added attribute/brand) and 0 (category swapped, attribute contradicted, brand
  swapped, a complement such as "protective case" for a smartphone). Every label
  equals the judge's grade.
- **Search logs**: simulated sessions ``(user query, clicked product, purchased)``
  whose queries favour rare and log-only variants; rendered as text they show
  user vocabulary next to catalog titles, the paper's "user data" for stage 0.
- **Judge**: the oracle that parses free text into an Intent (full lexicon,
  single-typo tolerant) and grades (intent, rewrite) in {0, 1, 2} and (intent,
  product) as EXACT / SUBSTITUTE / COMPLEMENT / IRRELEVANT. The judge measures
  *meaning*; BM25 (qrw.search) measures whether the *words* reach the catalog.

Departures from the paper: a hand-written world instead of JD's logs; the
"human" relevance labels come from the rule-based judge; the world is English.

Run ``python -m qrw.world --stats`` for counts and the lexical-gap table.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from qrw.config import Parser, UserError, add_config_args, arg, check, config_from_args, run_main

SPLITS = ("train", "val", "test")
SEGMENTS = ("head", "torso", "tail")  # easy -> hard; the last is the hardest
TIERS = ("canonical", "common", "rare", "log_only")

# Grades of a product for an intent (Judge.grade_products).
EXACT, SUBSTITUTE, COMPLEMENT, IRRELEVANT = 3, 2, 1, 0
# Grades of a rewrite for an intent (Judge.grade_rewrite).
REWRITE_EQUIVALENT, REWRITE_PARTIAL, REWRITE_IRRELEVANT = 2, 1, 0

# Words that carry no product meaning. Users add them; the judge ignores them;
# they never appear in titles. Connectors ("in black", "with 128gb") are fillers.
FILLERS = ("cheap", "best", "buy", "new", "sale", "deal", "deals", "online", "top", "discount",
           "good", "affordable", "quality", "latest", "shop", "price", "offer", "genuine")
CONNECTORS = ("in", "with", "for", "and", "the", "a", "of")
# Title words that are catalog vocabulary but no lexicon term (model-line flavour).
DESCRIPTORS = ("pro", "plus", "max", "lite", "ultra", "mini", "classic", "sport", "slim", "air",
               "edge", "prime", "neo", "essential")


# ----------------------------------------------------------------------------------------------
# The hand-written tables. Variant specs read "common, ... | rare, ... | log_only, ...".
# ----------------------------------------------------------------------------------------------

class CategorySpec(NamedTuple):
    name: str      # canonical category term (as in titles)
    variants: str  # "common | rare | log_only" user variants
    brands: str    # comma-separated canonical brands
    attrs: str     # "attr: v1, v2; attr2: ..." in title order
    price: float   # typical price


CATEGORIES = (
    CategorySpec("smartphone", "phone, cell phone, mobile | cellphone, handset | mobile phone, celly",
                 "apple, samsung, xiaomi, google, oneplus, motorola, huawei",
                 "colour: black, white, blue, silver, gold, green, purple; storage: 64gb, 128gb, 256gb, 512gb", 650),
    CategorySpec("protective case", "phone case, phone cover | bumper case, mobile cover | phone shell",
                 "otterbox, spigen, casetify, esr, apple",
                 "colour: black, blue, red, pink, green, purple; material: silicone, leather, plastic", 25),
    CategorySpec("charger", "phone charger, charging brick | power adapter, wall plug | juicer plug",
                 "anker, belkin, ugreen, apple, samsung", "power: 20w, 30w, 65w; colour: black, white", 30),
    CategorySpec("power bank", "portable charger, battery pack | powerbank, external battery | juice pack",
                 "anker, xiaomi, belkin, ugreen, mophie",
                 "battery: 5000mah, 10000mah, 20000mah; colour: black, white, blue", 40),
    CategorySpec("headphones", "earbuds, earphones, headset | ear buds, buds | cans",
                 "sony, bose, apple, jbl, beats, sennheiser, samsung",
                 "colour: black, white, silver, blue; connectivity: wireless, wired; style: over-ear, in-ear, on-ear",
                 180),
    CategorySpec("speaker", "speakers, boombox | loudspeaker, sound box | blaster",
                 "jbl, bose, sony, ultimate ears, anker, marshall",
                 "colour: black, blue, red, grey; connectivity: wireless, wired", 120),
    CategorySpec("laptop", "notebook, lappy | notebook computer, portable pc | ultrabook",
                 "apple, dell, hp, lenovo, asus, acer, microsoft",
                 "colour: black, silver, grey; storage: 256gb, 512gb, 1tb; "
                 "screen: 13 inch, 14 inch, 15 inch, 16 inch, 17 inch", 1000),
    CategorySpec("computer bag", "laptop bag, laptop case | notebook bag, laptop sleeve | messenger satchel",
                 "targus, samsonite, incase, thule",
                 "colour: black, grey, blue, brown; material: nylon, leather, polyester; "
                 "screen: 13 inch, 15 inch, 17 inch", 60),
    CategorySpec("mouse", "mice, computer mouse | pc mouse, clicker | trackball",
                 "logitech, microsoft, razer, apple, hp",
                 "connectivity: wireless, wired; colour: black, white, grey", 40),
    CategorySpec("keyboard", "kbd, keeb | typing board, keyboards | keebs",
                 "logitech, razer, corsair, microsoft, apple", "connectivity: wireless, wired; colour: black, white",
                 80),
    CategorySpec("monitor", "display, screen | computer screen, pc display | lcd",
                 "dell, samsung, lg, asus, acer, hp", "screen: 24 inch, 27 inch, 32 inch; resolution: 1080p, 4k", 300),
    CategorySpec("tablet", "tab, pad | slate, tablet pc | phablet",
                 "apple, samsung, lenovo, amazon, microsoft",
                 "colour: black, silver, grey, pink; storage: 64gb, 128gb, 256gb; "
                 "screen: 8 inch, 10 inch, 11 inch, 13 inch", 450),
    CategorySpec("television", "tv, telly | tele, smart tv | flatscreen",
                 "samsung, lg, sony, tcl, hisense, panasonic",
                 "screen: 43 inch, 50 inch, 55 inch, 65 inch, 75 inch; resolution: 4k, 1080p", 700),
    CategorySpec("soundbar", "sound bar, tv speaker | speaker bar, home theater bar | surround bar",
                 "sonos, bose, samsung, lg, jbl, yamaha", "colour: black, white; connectivity: wireless, wired", 300),
    CategorySpec("wall mount", "tv mount, tv bracket | mounting bracket, tv wall mount | tv hanger",
                 "sanus, echogear, mounting dream, amazon basics", "screen: 43 inch, 55 inch, 65 inch, 75 inch", 50),
    CategorySpec("game console", "gaming console, gaming system | games machine, video game system | gaming box",
                 "sony, microsoft, nintendo, valve", "storage: 512gb, 1tb; colour: black, white", 450),
    CategorySpec("controller", "gamepad, joypad | joystick, game pad | joycon",
                 "sony, microsoft, nintendo, 8bitdo, razer",
                 "colour: black, white, red, blue; connectivity: wireless, wired", 60),
    CategorySpec("camera", "digicam, cam | digital camera, point and shoot | shooter",
                 "canon, nikon, sony, fujifilm, panasonic", "colour: black, silver; resolution: 4k, 1080p", 800),
    CategorySpec("memory card", "sd card, micro sd | microsd, flash card | tf card",
                 "sandisk, samsung, kingston, lexar", "storage: 32gb, 64gb, 128gb, 256gb", 25),
    CategorySpec("tripod", "camera stand, tri pod | camera legs, photo stand | gorillapod",
                 "manfrotto, joby, amazon basics, ulanzi", "material: aluminium, carbon fiber, plastic", 70),
    CategorySpec("smartwatch", "smart watch, fitness watch | wearable, fitness tracker | wrist computer",
                 "apple, samsung, garmin, fitbit, huawei, xiaomi",
                 "colour: black, silver, pink, gold; material: silicone, leather, stainless steel", 300),
    CategorySpec("sneakers", "kicks, trainers | tennis shoes, runners | sneaks",
                 "nike, adidas, puma, new balance, reebok, converse, vans, asics",
                 "colour: black, white, red, blue, grey; gender: men, women, kids; "
                 "shoe size: size 7, size 8, size 9, size 10, size 11, size 12", 90),
    CategorySpec("socks", "sox, sock | hosiery, stockings | footies",
                 "nike, adidas, puma, hanes, under armour",
                 "colour: black, white, grey; gender: men, women, kids; size: small, medium, large", 12),
    CategorySpec("t-shirt", "tee, tshirt, t shirt | tee shirt, tees | tshirts",
                 "nike, adidas, uniqlo, h&m, gap, hanes, levis",
                 "colour: black, white, red, blue, green, grey; gender: men, women, kids; "
                 "size: small, medium, large, xl; material: cotton, polyester", 20),
    CategorySpec("jeans", "denims, denim | dungarees, denim pants | jeanz",
                 "levis, wrangler, lee, diesel, gap",
                 "colour: blue, black, grey; gender: men, women, kids; size: small, medium, large, xl", 60),
    CategorySpec("belt", "belts | waist strap, waistband | cinch",
                 "levis, tommy hilfiger, calvin klein, gucci",
                 "material: leather, canvas; colour: black, brown; gender: men, women", 35),
    CategorySpec("jacket", "coat, windbreaker | anorak, parka | outerwear",
                 "north face, columbia, patagonia, adidas, nike, uniqlo",
                 "colour: black, blue, green, red, beige; gender: men, women, kids; size: small, medium, large, xl; "
                 "material: polyester, wool, leather, nylon", 120),
    CategorySpec("dress", "frock, gown | sundress, shift dress | frocks",
                 "zara, h&m, mango, uniqlo",
                 "colour: black, red, blue, pink, white, green; size: small, medium, large; "
                 "material: cotton, polyester", 50),
    CategorySpec("handbag", "purse, hand bag | tote, clutch | pocketbook",
                 "michael kors, coach, gucci, kate spade",
                 "colour: black, brown, beige, red, pink; material: leather, canvas", 200),
    CategorySpec("backpack", "rucksack, back pack | knapsack, bagpack | bookbag",
                 "north face, jansport, herschel, samsonite, osprey",
                 "colour: black, grey, blue, green, red; capacity: 20 litre, 30 litre, 40 litre; "
                 "material: nylon, polyester, canvas", 70),
    CategorySpec("water bottle", "drink bottle, sports bottle | sipper, canteen | bidon",
                 "hydro flask, yeti, contigo, camelbak, thermos",
                 "colour: black, white, blue, pink, green; material: stainless steel, plastic, aluminium", 30),
    CategorySpec("refrigerator", "fridge, fridge freezer | refridgerator, icebox | frig",
                 "samsung, lg, whirlpool, bosch, haier, ge",
                 "colour: silver, white, black; capacity: 250 litre, 350 litre, 450 litre, 550 litre", 1100),
    CategorySpec("water filter", "fridge filter, filter cartridge | water purifier, purifier | filter jug",
                 "brita, pur, samsung, lg, whirlpool", "pack: 1 pack, 2 pack, 3 pack", 30),
    CategorySpec("washing machine", "washer, clothes washer | laundry machine, washing mashine | front loader",
                 "samsung, lg, whirlpool, bosch, electrolux",
                 "load: 7 kg, 8 kg, 9 kg, 10 kg; colour: white, silver, grey", 650),
    CategorySpec("laundry detergent", "washing powder, laundry soap | laundry liquid, detergent pods | suds",
                 "tide, persil, ariel, gain", "pack: 1 pack, 2 pack, 3 pack", 18),
    CategorySpec("coffee maker", "coffee machine, coffeemaker | espresso machine, brewer | drip machine",
                 "delonghi, nespresso, breville, keurig, philips, krups",
                 "colour: black, silver, red, white; cups: 4 cup, 8 cup, 12 cup", 150),
    CategorySpec("coffee beans", "whole beans, espresso beans | coffee bean, java | joe",
                 "lavazza, illy, starbucks, peets", "roast: light roast, medium roast, dark roast", 15),
    CategorySpec("kettle", "electric kettle, tea kettle | water boiler, jug kettle | hot pot",
                 "breville, russell hobbs, smeg, cuisinart, philips",
                 "colour: black, white, silver, red; material: stainless steel, plastic", 45),
)

# Complementary categories (symmetric): bought together, never a substitute.
COMPLEMENT_PAIRS = (
    ("smartphone", "protective case"), ("smartphone", "charger"), ("smartphone", "power bank"),
    ("smartphone", "headphones"), ("smartphone", "speaker"), ("smartwatch", "charger"),
    ("laptop", "computer bag"), ("laptop", "mouse"), ("laptop", "keyboard"), ("laptop", "charger"),
    ("monitor", "keyboard"), ("monitor", "mouse"), ("tablet", "keyboard"), ("tablet", "protective case"),
    ("television", "soundbar"), ("television", "wall mount"), ("game console", "controller"),
    ("game console", "television"), ("camera", "memory card"), ("camera", "tripod"),
    ("sneakers", "socks"), ("jeans", "belt"), ("jeans", "t-shirt"), ("jacket", "t-shirt"),
    ("dress", "handbag"), ("backpack", "water bottle"), ("refrigerator", "water filter"),
    ("washing machine", "laundry detergent"), ("coffee maker", "coffee beans"), ("kettle", "coffee beans"),
)

# Hand-written brand variants. Brands missing here get generic ones (see _brand_variants).
BRAND_VARIANTS = {
    "apple": "apple inc, aple | appl | aapl",
    "samsung": "samsumg, sammy | samsung electronics | ssg",
    "xiaomi": "mi, xiomi | redmi | xaomi",
    "google": "pixel | googel | googl",
    "oneplus": "one plus, 1plus | 1+ | onepluss",
    "motorola": "moto | motorolla | mot",
    "huawei": "huwei, hauwei | hw | huawey",
    "sony": "sonny | sony corp | soni",
    "lg": "lg electronics, l.g. | lucky goldstar | elgee",
    "hp": "hewlett packard, h.p. | hewlett | hpe",
    "dell": "del | dell inc | dell technologies",
    "lenovo": "lenova | lenevo | thinkpad",
    "asus": "assus | azus | asus rog",
    "microsoft": "ms, msft | micro soft | microsft",
    "logitech": "logi | logitec | logtech",
    "nike": "nikes, nike's | nikey | swoosh",
    "adidas": "addidas | adi | three stripes",
    "puma": "pumas | puma's | pooma",
    "new balance": "nb, newbalance | new bal | n balance",
    "converse": "chucks, converses | all star | chuck taylor",
    "vans": "van's | vanz | off the wall",
    "reebok": "rebok | reeboks | reebock",
    "asics": "asic | ascis | onitsuka",
    "under armour": "under armor, ua | underarmour | under-armour",
    "levis": "levi, levi's | levi strauss | lvs",
    "north face": "the north face, northface | tnf | nf",
    "calvin klein": "ck, calvinklein | c klein | calvin k",
    "tommy hilfiger": "tommyhilfiger, hilfigger | tommy h | th",
    "michael kors": "mk, michaelkors | m kors | mkors",
    "kate spade": "katespade, kate spades | ks | k spade",
    "h&m": "hm, h and m | hennes | h+m",
    "delonghi": "de longhi, de'longhi | delongi | dlonghi",
    "russell hobbs": "russel hobbs, rh | russellhobbs | r hobbs",
    "hydro flask": "hydroflask, hydro-flask | hf | hydroflasks",
    "beats": "beats by dre, beats dre | beatz | dre beats",
    "bose": "bose's | boze | bose corp",
    "jbl": "j.b.l. | jbl audio | jbls",
    "ultimate ears": "ue, ultimateears | u ears | ultimate-ears",
    "sennheiser": "senheiser, sennheisser | senn | sennh",
    "amazon": "amazon's | kindle | amzn",
    "amazon basics": "amazonbasics | amz basics | amazon-basics",
    "canon": "cannon | canon's | eos",
    "nikon": "nikkon | nikon's | nikkor",
    "fujifilm": "fuji, fuji film | fujiflim | fujinon",
    "gucci": "guci | gucci's | gg",
    "uniqlo": "uniqulo | uniclo | uni qlo",
    "nintendo": "nintendo's, ninty | nintendoo | big n",
    "whirlpool": "whirlpol | whirl pool | wpool",
    "nespresso": "nespreso | nes | nesspresso",
    "starbucks": "starbuck, sbux | starbucks coffee co | bucks",
    "peets": "peet's, peet | peets coffee co | peetnik",
}

# Hand-written variants of attribute values (numeric values with units use _UNIT_VARIANTS).
VALUE_VARIANTS = {
    "colour": {
        "black": "blk | jet black, onyx | ebony", "white": "wht | snow white, pearl | alabaster",
        "silver": "slvr | metallic silver, platinum | chrome", "grey": "gray | gry, graphite | charcoal",
        "blue": "blu | navy, cobalt | azure", "red": "rd | scarlet, crimson | cherry",
        "pink": "pnk | rose, blush | fuchsia", "green": "grn | olive, emerald | sage",
        "gold": "golden | champagne | gilded", "brown": "brwn | chocolate, mocha | cocoa",
        "beige": "cream | khaki, sand | ecru", "purple": "violet | lilac, plum | lavender",
    },
    "gender": {
        "men": "mens, for men, male | man, guys | gents",
        "women": "womens, for women, ladies | female, woman | gals",
        "kids": "for kids, childrens, child | children, youth | junior",
    },
    "size": {
        "small": "s, sm | sml, petite | smallish", "medium": "m, med | mdm, mid | medium size",
        "large": "l, lrg | big, lrge | lge", "xl": "extra large, x large | xlarge, x-large | 1x",
    },
    "material": {
        "leather": "lthr, real leather | genuine leather, hide | cowhide",
        "cotton": "cttn, pure cotton | cotten, combed cotton | jersey",
        "polyester": "poly | polyster, synthetic | microfiber",
        "canvas": "cnvs | duck canvas, twill | sailcloth",
        "wool": "woolen, woollen | merino | fleece", "nylon": "ripstop | cordura | polyamide",
        "stainless steel": "inox, s/s | stainless-steel, ss | 18/8",
        "plastic": "abs, plastics | polycarbonate, bpa free | acrylic",
        "aluminium": "aluminum, alu | alloy, aluminium alloy | aluminio",
        "silicone": "silicon, rubber | gel, tpu | soft touch",
        "carbon fiber": "carbon fibre, cf | carbon composite | cfrp",
    },
    "connectivity": {
        "wireless": "bluetooth, cordless | bt, wire free | untethered",
        "wired": "corded, with cable | cable, plug in | tethered",
    },
    "style": {
        "over-ear": "over ear, overear | around ear, full size | circumaural",
        "in-ear": "in ear, inear | canal, in the ear | iem",
        "on-ear": "on ear, onear | supra aural | on the ear",
    },
    "resolution": {"4k": "uhd, ultra hd | 2160p, 4 k | ultrahd", "1080p": "full hd, fhd | 1080, hd | 1920x1080"},
    "roast": {
        "light roast": "blonde roast, blonde | mild roast | cinnamon roast",
        "medium roast": "med roast, breakfast roast | city roast | american roast",
        "dark roast": "french roast, bold roast | espresso roast, italian roast | full city",
    },
}

# Variants of numeric values: attribute -> (regex-free template on the number n, per tier).
# "{n}" is the number, "{k}" the number in thousands, "{w}" the number as a word.
_UNIT_VARIANTS = {
    "storage": ("{n}gb", "{n} gb, {n}g | {n} gig, {n} gigs | {n}gig"),
    "screen": ("{n} inch", "{n} in, {n}in | {n} inches, {n}-inch | {n}inch, {n} incher"),
    "capacity": ("{n} litre", "{n}l, {n} liter | {n} liters, {n} ltr | {n}ltr, {n}lt"),
    "load": ("{n} kg", "{n}kg, {n} kilo | {n} kilos, {n} kilogram | {n}kgs"),
    "cups": ("{n} cup", "{n} cups, {n}-cup | {n}cup, {n} cupper | {n}cups"),
    "battery": ("{n}mah", "{n} mah, {k}k mah | {k}k, {n} milliamp | {n}ma"),
    "power": ("{n}w", "{n} w, {n} watt | {n} watts, {n}watt | {n}wt"),
    "shoe size": ("size {n}", "sz {n}, us {n} | size{n}, sz{n} | {n} us"),
    "pack": ("{n} pack", "{n}pk, {n}-pack | {w} pack, pack of {n} | {n}pcs"),
}
_TERABYTE_VARIANTS = "1 tb, 1t | 1 tera, 1000gb | 1terabyte"
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


# ----------------------------------------------------------------------------------------------
# Config and records
# ----------------------------------------------------------------------------------------------

@dataclass
class WorldConfig:
    """Everything that shapes the synthetic world. Same config -> byte-identical world."""

    seed: int = arg(0, "random seed of the world (>= 0); the same seed gives byte-identical data")
    n_products: int = arg(3000, "number of products in the catalog")
    n_train_queries: int = arg(8000, "training queries (distinct intent + variant combinations)")
    n_val_queries: int = arg(500, "validation queries")
    n_test_queries: int = arg(1000, "test queries")
    n_log_sessions: int = arg(20000, "simulated search-log sessions (query -> clicked product) for pretraining")
    popularity_zipf: float = arg(1.0, "Zipf exponent of popularity within a category (0 = all equally popular)")
    p_canonical: float = arg(0.3, "probability that a query term is typed in catalog vocabulary")
    p_rare: float = arg(0.25, "share of rare variants among the user variants a query uses")
    p_log_only: float = arg(0.12, "share of log-only variants among the user variants a query uses")
    p_typo: float = arg(0.06, "probability of a one-letter typo per query word of >= 5 letters")
    p_filler: float = arg(0.35, "probability that a query carries a filler word (cheap, best, buy, ...)")
    max_query_words: int = arg(10, "longest query in words")

    def __post_init__(self) -> None:
        check(self.seed >= 0, "--seed must be >= 0")
        check(self.n_products >= 1, "--n-products must be >= 1")
        check(self.n_train_queries >= 1, "--n-train-queries must be >= 1")
        check(self.n_val_queries >= 1, "--n-val-queries must be >= 1")
        check(self.n_test_queries >= 1, "--n-test-queries must be >= 1")
        check(self.n_log_sessions >= 0, "--n-log-sessions must be >= 0")
        check(self.popularity_zipf >= 0, "--popularity-zipf must be >= 0")
        for name in ("p_canonical", "p_rare", "p_log_only", "p_typo", "p_filler"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, f"--{name.replace('_', '-')} must be in [0, 1]")
        check(self.p_rare + self.p_log_only <= 1.0, "--p-rare + --p-log-only must be <= 1")
        check(self.max_query_words >= 6, "--max-query-words must be >= 6")


@dataclass(frozen=True)
class Intent:
    """What a shopper wants: a category, optionally a brand, and attribute values.

    All terms canonical. ``attrs`` is a tuple of ``(attribute, value)`` sorted by
    attribute name, so equal intents compare and hash equal.
    """

    category: str
    brand: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    def attr_dict(self) -> dict[str, str]:
        return dict(self.attrs)


@dataclass(frozen=True)
class Product:
    """One catalog item. ``attrs`` sorted by attribute name; ``title`` in catalog vocabulary."""

    id: int
    category: str
    brand: str
    attrs: tuple[tuple[str, str], ...]
    price: float
    popularity: float
    title: str


@dataclass(frozen=True)
class Query:
    """A user query with its ground truth.

    ``forms`` is the variant combination: the surface form used for each slot of
    the intent (brand, category, attributes in title order), before noise; the
    split key is ``(intent, forms)``. ``difficulty`` = rare variants + log-only
    variants + typos; ``segment`` is ``head`` (0), ``torso`` (1) or ``tail`` (>= 2).
    """

    text: str
    intent: Intent
    gold: str
    segment: str
    split: str
    forms: tuple[str, ...] = ()
    difficulty: int = 0


# ----------------------------------------------------------------------------------------------
# Lexicon
# ----------------------------------------------------------------------------------------------

def _split_tiers(spec: str) -> dict[str, tuple[str, ...]]:
    """``"a, b | c | d"`` -> {"common": (a, b), "rare": (c,), "log_only": (d,)}; empty parts allowed."""
    parts = [p.strip() for p in spec.split("|")]
    parts += [""] * (3 - len(parts))
    out = {}
    for tier, part in zip(TIERS[1:], parts):
        out[tier] = tuple(" ".join(v.split()) for v in part.split(",") if v.strip())
    return out


def _parse_attrs(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``"colour: black, white; storage: 64gb"`` -> (("colour", ("black", "white")), ("storage", ("64gb",)))."""
    out = []
    for chunk in spec.split(";"):
        if chunk.strip():
            name, values = chunk.split(":")
            out.append((name.strip(), tuple(v.strip() for v in values.split(","))))
    return tuple(out)


def _brand_variants(brand: str) -> dict[str, tuple[str, ...]]:
    """Brand variants: hand-written (BRAND_VARIANTS) or generic ("x's"; "xy"/"x y" initials for two words)."""
    if brand in BRAND_VARIANTS:
        return _split_tiers(BRAND_VARIANTS[brand])
    words = brand.split()
    if len(words) > 1:
        return _split_tiers(f"{''.join(words)} | {''.join(w[0] for w in words)} |")
    return _split_tiers(f"{brand}'s | {brand} brand |")


def _value_variants(attr: str, value: str) -> dict[str, tuple[str, ...]]:
    """User variants of one attribute value (hand table, or unit templates for numeric values)."""
    if attr in VALUE_VARIANTS:
        return _split_tiers(VALUE_VARIANTS[attr][value])
    if value == "1tb":
        return _split_tiers(_TERABYTE_VARIANTS)
    template, spec = _UNIT_VARIANTS[attr]
    number = int("".join(c for c in value if c.isdigit()))
    filled = spec.format(n=number, k=number // 1000, w=_NUMBER_WORDS.get(number, str(number)))
    return _split_tiers(filled)


class Lexicon:
    """Canonical terms and their user variants.

    A *term* is ``(slot, canonical value)`` with slot ``"category"``, ``"brand"``
    or an attribute name. ``forms[term][tier]`` lists its surface forms per tier
    (``canonical`` is the term itself). ``form_term`` maps every surface form
    (canonical or variant, a phrase of one or more words) to its term; forms
    are globally unique, so a form has exactly one meaning.
    """

    def __init__(self, categories: tuple[CategorySpec, ...] = CATEGORIES) -> None:
        self.categories = categories
        self.category_names = tuple(c.name for c in categories)
        self.category_attrs: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
        self.category_brands: dict[str, tuple[str, ...]] = {}
        self.forms: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
        self.form_term: dict[str, tuple[str, str]] = {}
        self.form_tier: dict[str, str] = {}
        attribute_names: list[str] = []
        brands: list[str] = []
        for spec in categories:
            self._add(("category", spec.name), _split_tiers(spec.variants))
            attrs = _parse_attrs(spec.attrs)
            self.category_attrs[spec.name] = attrs
            self.category_brands[spec.name] = tuple(b.strip() for b in spec.brands.split(","))
            for brand in self.category_brands[spec.name]:
                if brand not in brands:
                    brands.append(brand)
                    self._add(("brand", brand), _brand_variants(brand))
            for attr, values in attrs:
                if attr not in attribute_names:
                    attribute_names.append(attr)
                for value in values:
                    if (attr, value) not in self.forms:
                        self._add((attr, value), _value_variants(attr, value))
        self.attribute_names = tuple(attribute_names)
        self.brands = tuple(brands)
        complements: dict[str, list[str]] = {c: [] for c in self.category_names}
        for a, b in COMPLEMENT_PAIRS:
            complements[a].append(b)
            complements[b].append(a)
        self.complements = {c: tuple(v) for c, v in complements.items()}
        self.max_form_words = max(len(f.split()) for f in self.form_term)

    def _add(self, term: tuple[str, str], tiers: dict[str, tuple[str, ...]]) -> None:
        entry = {"canonical": (term[1],), **tiers}
        self.forms[term] = entry
        for tier in TIERS:
            for form in entry[tier]:
                owner = self.form_term.get(form)
                assert owner is None or owner == term, f"form {form!r} means both {owner} and {term}"
                if owner is None:
                    self.form_term[form] = term
                    self.form_tier[form] = tier

    def variants(self, tier: str) -> list[str]:
        """All forms of one tier, in table order."""
        return [f for f, t in self.form_tier.items() if t == tier]


# ----------------------------------------------------------------------------------------------
# Typo handling
# ----------------------------------------------------------------------------------------------

def _deletes(word: str) -> list[str]:
    return [word[:i] + word[i + 1:] for i in range(len(word))]


def _one_edit(a: str, b: str) -> bool:
    """True iff a and b differ by exactly one deletion, insertion, substitution or adjacent transposition."""
    la, lb = len(a), len(b)
    if a == b or abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


class Draws:
    """Fast scalar random draws from a numpy Generator (uniforms fetched in blocks of 4096).

    Scalar ``Generator`` calls cost about a microsecond each; the world makes
    millions of them. Deterministic: the same generator state gives the same draws.
    """

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng = rng
        self._block = block
        self._buffer: list[float] = []
        self._next = 0

    def random(self) -> float:
        """A uniform float in [0, 1)."""
        if self._next >= len(self._buffer):
            self._buffer = self.rng.random(self._block).tolist()
            self._next = 0
        self._next += 1
        return self._buffer[self._next - 1]

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.random() * n), n - 1)

    def pick(self, options):
        """A uniform element of a non-empty sequence."""
        return options[self.below(len(options))]

    def weighted(self, cumulative: list[float]) -> int:
        """Index i with probability proportional to weight i, given the running sums of the weights."""
        return min(bisect.bisect_right(cumulative, self.random() * cumulative[-1]), len(cumulative) - 1)

    def permutation(self, n: int) -> list[int]:
        """A uniform permutation of range(n) (Fisher-Yates)."""
        order = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            order[i], order[j] = order[j], order[i]
        return order


def make_typo(word: str, draws: Draws) -> str:
    """One random edit (delete, insert, substitute, transpose) of a word of >= 2 letters, not on the first letter."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    kind = draws.below(4)
    i = 1 + draws.below(len(word) - 1)
    if kind == 0:
        return word[:i] + word[i + 1:]
    if kind == 1:
        return word[:i] + draws.pick(letters) + word[i:]
    if kind == 2:
        c = draws.pick(letters)
        return word[:i] + (c if c != word[i] else letters[(letters.index(c) + 1) % 26]) + word[i + 1:]
    i = min(i, len(word) - 2)
    if word[i] == word[i + 1]:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


# ----------------------------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------------------------

class Judge:
    """The oracle: parses text into an Intent and grades rewrites and products.

    Parsing (``parse``): lowercase whitespace tokens; each unknown token of >= 4
    characters that is one edit (deletion, insertion, substitution, adjacent
    transposition) away from a known word is corrected to it (the
    lexicographically first such word when several are; precomputed
    single-deletion neighbourhoods make this a few dict lookups). Then greedy
    longest-match over all surface forms (canonical and every variant tier), so
    "phone case" is a protective case, not a phone. Fillers, connectors, title
    words and unknown tokens are ignored. The text parses to ``None`` when it
    names no category, or names two different values for one slot (two
    categories, two brands, "black white"): such a text does not state one
    intent.

    Rewrite grades (``grade_rewrite(intent, text)``), comparing ``r = parse(text)``
    with the query intent ``q``:

    - 0 (irrelevant): ``r`` is None; another category (a complement such as
      "protective case" for a smartphone included); a different brand; an
      attribute with a different value (contradiction).
    - 2 (equivalent): ``r == q`` (word order, fillers, variants and single typos
      do not matter).
    - 1 (partial): otherwise: same category, nothing contradicted, but the brand
      or some attributes were dropped (broadened, down to the bare category), or
      a brand or attribute the query did not ask for was added (narrowed; this
      holds even for an attribute the category does not have).

    Product grades (``grade_products(intent)``), vectorised over the catalog:
    EXACT (3) = same category, brand (if the intent names one) and every
    attribute value of the intent; SUBSTITUTE (2) = same category otherwise;
    COMPLEMENT (1) = a complementary category (``COMPLEMENT_PAIRS``);
    IRRELEVANT (0) = everything else.

    Caches: corrected words, parses (both bounded by ``max_cache``), product
    grades per intent (read-only arrays).
    """

    def __init__(self, lexicon: Lexicon, products: list[Product], max_cache: int = 500_000) -> None:
        self.lexicon = lexicon
        self._form_term = lexicon.form_term
        self._max_form_words = lexicon.max_form_words
        self._max_cache = max_cache
        known = set(FILLERS) | set(CONNECTORS) | set(DESCRIPTORS)
        for form in lexicon.form_term:
            known.update(form.split())
        for product in products:
            known.update(product.title.split())
        self.known_words = frozenset(known)
        neighbours: dict[str, set[str]] = {}
        for word in sorted(known):
            if len(word) >= 3:
                for key in [word, *_deletes(word)]:
                    neighbours.setdefault(key, set()).add(word)
        self._neighbours = {k: tuple(sorted(v)) for k, v in neighbours.items()}
        self._correct_cache: dict[str, str] = {}
        self._parse_cache: dict[str, Intent | None] = {}
        # Product code arrays: (n,) category/brand codes, (n, A) attribute value codes (-1 = none).
        self._category_code = {c: i for i, c in enumerate(lexicon.category_names)}
        self._brand_code = {b: i for i, b in enumerate(lexicon.brands)}
        self._attr_index = {a: i for i, a in enumerate(lexicon.attribute_names)}
        self._value_code: dict[tuple[str, str], int] = {}
        for term in lexicon.forms:
            if term[0] in self._attr_index:
                self._value_code[term] = len(self._value_code)
        n = len(products)
        self.product_category = np.array([self._category_code[p.category] for p in products], dtype=np.int64)
        self.product_brand = np.array([self._brand_code[p.brand] for p in products], dtype=np.int64)
        self.product_attrs = np.full((n, len(self._attr_index)), -1, dtype=np.int64)  # (n, A)
        for p in products:
            for attr, value in p.attrs:
                self.product_attrs[p.id, self._attr_index[attr]] = self._value_code[(attr, value)]
        n_cat = len(lexicon.category_names)
        self._complement_matrix = np.zeros((n_cat, n_cat), dtype=bool)  # (C, C)
        for a, partners in lexicon.complements.items():
            for b in partners:
                self._complement_matrix[self._category_code[a], self._category_code[b]] = True
        self._grade_cache: dict[Intent, np.ndarray] = {}
        self._exact_count_cache: dict[Intent, int] = {}

    # -- parsing ---------------------------------------------------------------------------------

    def correct(self, word: str) -> str:
        """The known word ``word`` is a single typo of (or ``word`` itself)."""
        if word in self.known_words or len(word) < 4:
            return word
        cached = self._correct_cache.get(word)
        if cached is not None:
            return cached
        candidates = set(self._neighbours.get(word, ()))
        for key in _deletes(word):
            candidates.update(self._neighbours.get(key, ()))
        matches = sorted(c for c in candidates if _one_edit(word, c))
        result = matches[0] if matches else word
        if len(self._correct_cache) >= self._max_cache:
            self._correct_cache.clear()
        self._correct_cache[word] = result
        return result

    def terms(self, text: str) -> list[tuple[str, str]]:
        """The ``(slot, value)`` terms the text mentions, in order (longest match, typos corrected)."""
        tokens = [self.correct(t) for t in text.lower().split()]
        found = []
        i, n = 0, len(tokens)
        while i < n:
            for length in range(min(self._max_form_words, n - i), 0, -1):
                term = self._form_term.get(" ".join(tokens[i:i + length]))
                if term is not None:
                    found.append(term)
                    i += length
                    break
            else:
                i += 1
        return found

    def parse(self, text: str) -> Intent | None:
        """Free text -> Intent (canonical terms), or None (no category, or a slot with two values)."""
        if text in self._parse_cache:
            return self._parse_cache[text]
        slots: dict[str, str] = {}
        result: Intent | None = None
        for slot, value in self.terms(text):
            if slots.setdefault(slot, value) != value:
                break
        else:
            category = slots.pop("category", None)
            if category is not None:
                brand = slots.pop("brand", None)
                result = Intent(category, brand, tuple(sorted(slots.items())))
        if len(self._parse_cache) >= self._max_cache:
            self._parse_cache.clear()
        self._parse_cache[text] = result
        return result

    # -- grading ---------------------------------------------------------------------------------

    def grade_rewrite(self, intent: Intent, text: str | None) -> int:
        """Grade of rewrite ``text`` for the query intent: 2 equivalent, 1 partial, 0 irrelevant (see class doc)."""
        if text is None:
            return REWRITE_IRRELEVANT
        r = self.parse(text)
        if r is None or r.category != intent.category:
            return REWRITE_IRRELEVANT
        if intent.brand is not None and r.brand is not None and r.brand != intent.brand:
            return REWRITE_IRRELEVANT
        wanted = intent.attr_dict()
        for attr, value in r.attrs:
            if attr in wanted and wanted[attr] != value:
                return REWRITE_IRRELEVANT
        return REWRITE_EQUIVALENT if r == intent else REWRITE_PARTIAL

    def grade_products(self, intent: Intent) -> np.ndarray:
        """(n_products,) int8 grades of every product for ``intent`` (EXACT/SUBSTITUTE/COMPLEMENT/IRRELEVANT).

        Cached per intent; the returned array is read-only.
        """
        cached = self._grade_cache.get(intent)
        if cached is not None:
            return cached
        code = self._category_code.get(intent.category)
        n = len(self.product_category)
        if code is None:
            grades = np.zeros(n, dtype=np.int8)
        else:
            same = self.product_category == code  # (n,)
            exact = same.copy()
            if intent.brand is not None:
                exact &= self.product_brand == self._brand_code.get(intent.brand, -2)
            for attr, value in intent.attrs:
                column = self._attr_index.get(attr)
                value_code = self._value_code.get((attr, value), -2)
                exact &= False if column is None else self.product_attrs[:, column] == value_code
            complement = self._complement_matrix[code][self.product_category]  # (n,)
            grades = np.where(exact, EXACT, np.where(same, SUBSTITUTE, np.where(complement, COMPLEMENT,
                                                                                   IRRELEVANT))).astype(np.int8)
        grades.flags.writeable = False
        if len(self._grade_cache) >= self._max_cache // 10:
            self._grade_cache.clear()
            self._exact_count_cache.clear()
        self._grade_cache[intent] = grades
        return grades

    def exact_count(self, intent: Intent) -> int:
        """Number of catalog products that are EXACT for ``intent``."""
        count = self._exact_count_cache.get(intent)
        if count is None:
            count = int((self.grade_products(intent) == EXACT).sum())
            self._exact_count_cache[intent] = count
        return count


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def render_canonical(lexicon: Lexicon, intent: Intent) -> str:
    """The intent in catalog vocabulary: ``brand category values`` (values in title order)."""
    return " ".join(_canonical_phrases(lexicon, intent))


def _canonical_phrases(lexicon: Lexicon, intent: Intent) -> list[str]:
    wanted = intent.attr_dict()
    phrases = [intent.brand] if intent.brand else []
    phrases.append(intent.category)
    order = [a for a, _ in lexicon.category_attrs.get(intent.category, ())]
    phrases += [wanted[a] for a in order if a in wanted]
    phrases += [v for a, v in intent.attrs if a not in order]  # attributes foreign to the category
    return phrases


def _intent_slots(lexicon: Lexicon, intent: Intent) -> list[tuple[str, str]]:
    """The intent's terms in title order: brand, category, attributes."""
    slots = [("brand", intent.brand)] if intent.brand else []
    slots.append(("category", intent.category))
    wanted = intent.attr_dict()
    slots += [(a, wanted[a]) for a, _ in lexicon.category_attrs[intent.category] if a in wanted]
    return slots


# ----------------------------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------------------------

_RNG_CATALOG, _RNG_QUERIES, _RNG_LOGS, _RNG_RELEVANCE = 1, 2, 3, 4
_ATTR_COUNT_WEIGHTS = (0.25, 0.4, 0.25, 0.1)  # P(intent has 0, 1, 2, 3 attributes)
_P_BRAND = 0.5             # P(intent names a brand)
_P_SHUFFLE = 0.4           # P(query phrases in random order) else brand-category-attributes
_P_CONNECTOR = 0.25        # P("in"/"with" before an attribute phrase)
_INTENT_POPULARITY = 0.5   # intents come from products drawn with P ~ popularity ** this
_LOG_TIER_WEIGHTS = (0.45, 0.25, 0.30)  # common / rare / log-only variants in search-log queries
_LOG_P_EXACT_CLICK = 0.85  # share of log clicks on an EXACT product (else a substitute)


class World:
    """The seeded synthetic world (see the module docstring).

    Attributes: ``config``, ``lexicon``, ``products`` (list[Product]), ``titles``,
    ``popularity`` (n,) float64, ``prices`` (n,) float64, ``judge``,
    ``queries[split]`` (list[Query]) for split in ``SPLITS``, ``logs`` (list of
    ``(query text, product id, purchased)``), ``log_queries`` (the distinct logged
    queries as ``Query`` objects with split ``"log"``; GRPO's training queries).
    """

    SEGMENTS = SEGMENTS
    SPLITS = SPLITS

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        self.lexicon = Lexicon()
        self.products = self._build_catalog(np.random.default_rng([self.config.seed, _RNG_CATALOG]))
        self.titles = [p.title for p in self.products]
        self.popularity = np.array([p.popularity for p in self.products], dtype=np.float64)
        self.prices = np.array([p.price for p in self.products], dtype=np.float64)
        self.judge = Judge(self.lexicon, self.products)
        self._category_products = {c: np.array([p.id for p in self.products if p.category == c], dtype=np.int64)
                                   for c in self.lexicon.category_names}
        self._query_categories = [c for c in self.lexicon.category_names if len(self._category_products[c])]
        self._sampling_tables()
        self._pool_cache: dict[Intent, tuple] = {}
        self.queries = self._build_queries(Draws(np.random.default_rng([self.config.seed, _RNG_QUERIES])))
        self.logs = self._build_logs(Draws(np.random.default_rng([self.config.seed, _RNG_LOGS])))
        self._relevance_cache: dict[str, list[tuple[str, str, int]]] = {}

    # -- catalog ---------------------------------------------------------------------------------

    def _build_catalog(self, rng: np.random.Generator) -> list[Product]:
        """Products: brand ~ Zipf over the category's brands, uniform attribute values, price, popularity."""
        lexicon, cfg = self.lexicon, self.config
        n_cat = len(lexicon.category_names)
        demand = rng.lognormal(0.0, 0.3, size=n_cat)
        counts = np.floor(cfg.n_products * demand / demand.sum()).astype(int)
        for i in rng.permutation(n_cat)[: cfg.n_products - counts.sum()]:
            counts[i] += 1
        brand_premium = {b: float(rng.lognormal(0.0, 0.25)) for b in lexicon.brands}
        brand_appeal = {b: float(rng.lognormal(0.0, 0.5)) for b in lexicon.brands}
        products: list[Product] = []
        for c, spec in enumerate(lexicon.categories):
            n = int(counts[c])
            if n == 0:
                continue
            brands = lexicon.category_brands[spec.name]
            brand_weights = 1.0 / (1.0 + rng.permutation(len(brands))) ** 0.7
            brand_idx = rng.choice(len(brands), size=n, p=brand_weights / brand_weights.sum())
            attrs = lexicon.category_attrs[spec.name]
            value_idx = [rng.integers(len(values), size=n) for _, values in attrs]
            has_descriptor = rng.random(n) < 0.5
            descriptor_idx = rng.integers(len(DESCRIPTORS), size=n)
            noise = rng.lognormal(0.0, 0.15, size=n)
            # Popularity: Zipf over a within-category rank; appealing brands and low prices rank higher.
            appeal = np.array([math.log(brand_appeal[brands[b]]) for b in brand_idx]) + rng.gumbel(size=n)
            prices = np.empty(n)
            rows = []
            for i in range(n):
                brand = brands[brand_idx[i]]
                chosen = [(name, values[value_idx[j][i]]) for j, (name, values) in enumerate(attrs)]
                # Ordinal attributes (storage, screen, capacity, ...) cost 15% more per step.
                steps = sum(int(value_idx[j][i]) for j, (name, _) in enumerate(attrs) if name in _UNIT_VARIANTS)
                prices[i] = spec.price * brand_premium[brand] * (1.15 ** steps) * noise[i]
                words = [brand] + ([DESCRIPTORS[descriptor_idx[i]]] if has_descriptor[i] else [])
                title = " ".join(words + [spec.name] + [v for _, v in chosen])
                rows.append((brand, tuple(sorted(chosen)), title))
            appeal -= 0.5 * np.log(prices / spec.price)
            rank = np.empty(n, dtype=np.int64)
            rank[np.argsort(-appeal, kind="stable")] = np.arange(n)
            popularity = 1000.0 * demand[c] * (1.0 + rank) ** (-cfg.popularity_zipf)
            for i, (brand, chosen, title) in enumerate(rows):
                products.append(Product(len(products), spec.name, brand, chosen, round(float(prices[i]), 2),
                                        round(float(popularity[i]), 4), title))
        return products

    # -- queries ---------------------------------------------------------------------------------

    def _sampling_tables(self) -> None:
        """Precomputed running sums for intent sampling: product popularity and attribute count, per category."""
        self._intent_cumulative = {
            c: list(itertools.accumulate((self.popularity[ids] ** _INTENT_POPULARITY).tolist()))
            for c, ids in self._category_products.items() if len(ids)}
        self._attr_count_cumulative = {
            c: list(itertools.accumulate(_ATTR_COUNT_WEIGHTS[: len(attrs) + 1]))
            for c, attrs in self.lexicon.category_attrs.items()}

    def _sample_intent(self, draws: Draws) -> Intent:
        """A shopper's intent: a product (P ~ popularity^0.5) -> its category, maybe its brand, some of its values."""
        category = draws.pick(self._query_categories)
        ids = self._category_products[category]
        product = self.products[int(ids[draws.weighted(self._intent_cumulative[category])])]
        brand = product.brand if draws.random() < _P_BRAND else None
        names = [a for a, _ in self.lexicon.category_attrs[category]]
        n_attrs = draws.weighted(self._attr_count_cumulative[category])
        values = dict(product.attrs)
        attrs = tuple(sorted((a, values[a]) for a in (names[i] for i in draws.permutation(len(names))[:n_attrs])))
        return Intent(category, brand, attrs)

    def _choose_form(self, term: tuple[str, str], draws: Draws,
                     tier_weights: tuple[float, float, float]) -> tuple[str, str]:
        """(form, tier) for one term: canonical with p_canonical, else a variant drawn by tier weights."""
        forms = self.lexicon.forms[term]
        if draws.random() < self.config.p_canonical:
            return term[1], "canonical"
        tiers = [t for t, w in zip(TIERS[1:], tier_weights) if forms[t] and w > 0]
        if not tiers:
            return term[1], "canonical"
        tier = tiers[draws.weighted(list(itertools.accumulate(tier_weights[TIERS.index(t) - 1] for t in tiers)))]
        return draws.pick(forms[tier]), tier

    def _render(self, intent: Intent, draws: Draws, tier_weights: tuple[float, float, float],
                ) -> tuple[str, tuple[str, ...], int, bool] | None:
        """Render an intent in user vocabulary with noise.

        Per term: a surface form (``_choose_form``); attribute phrases may get a
        connector ("in black", "with 128 gb"); phrases in title order or shuffled;
        maybe a filler; each content word of >= 5 letters may get one typo (kept
        only if the judge still reads the same intent). Returns ``(text, forms,
        difficulty, uses_log_only)``, or None when too long or ambiguous.
        """
        cfg = self.config
        forms, phrases, difficulty, log_only = [], [], 0, False
        for slot, value in _intent_slots(self.lexicon, intent):
            form, tier = self._choose_form((slot, value), draws, tier_weights)
            forms.append(form)
            difficulty += tier in ("rare", "log_only")
            log_only |= tier == "log_only"
            words = form.split()
            if cfg.p_typo > 0:
                for i, word in enumerate(words):
                    if len(word) >= 5 and word.isalpha() and draws.random() < cfg.p_typo:
                        typo = make_typo(word, draws)
                        if typo not in self.judge.known_words and self.judge.correct(typo) == word:
                            words[i] = typo
                            difficulty += 1
            if slot not in ("brand", "category") and draws.random() < _P_CONNECTOR:
                words.insert(0, "in" if slot == "colour" else "with")
            phrases.append(words)
        if draws.random() < _P_SHUFFLE:
            phrases = [phrases[i] for i in draws.permutation(len(phrases))]
        if draws.random() < cfg.p_filler:
            filler = [draws.pick(FILLERS)]
            phrases = [filler] + phrases if draws.random() < 0.7 else phrases + [filler]
        words = [w for phrase in phrases for w in phrase]
        text = " ".join(words)
        if len(words) > cfg.max_query_words or self.judge.parse(text) != intent:
            return None
        return text, tuple(forms), difficulty, log_only

    def _build_queries(self, draws: Draws) -> dict[str, list[Query]]:
        """Queries split by (intent, variant combination).

        One i.i.d. stream of rendered intents; each combination is used once.
        The first ``n_test`` new combinations become test queries, the next
        ``n_val`` validation queries (so val/test follow the true query
        distribution), the rest training queries, skipping combinations that
        use a log-only variant (those never reach training).
        """
        cfg = self.config
        tier_weights = (1.0 - cfg.p_rare - cfg.p_log_only, cfg.p_rare, cfg.p_log_only)
        plan = (("test", cfg.n_test_queries), ("val", cfg.n_val_queries), ("train", cfg.n_train_queries))
        queries: dict[str, list[Query]] = {s: [] for s in SPLITS}
        used: set[tuple[Intent, tuple[str, ...]]] = set()
        total = sum(n for _, n in plan)
        attempts, found_before = 0, 0
        for split, wanted in plan:
            while len(queries[split]) < wanted:
                attempts += 1
                if attempts % 1000 == 0:  # a small world runs out: fail when < 1% of attempts find a new one
                    if len(used) - found_before < 10:
                        raise UserError(
                            f"could only generate {sum(map(len, queries.values()))} of {total} distinct queries: "
                            f"this world is too small; lower the query counts or raise --n-products")
                    found_before = len(used)
                intent = self._sample_intent(draws)
                rendered = self._render(intent, draws, tier_weights)
                if rendered is None:
                    continue
                text, forms, difficulty, log_only = rendered
                key = (intent, forms)
                if key in used or (split == "train" and log_only):
                    continue
                used.add(key)
                segment = SEGMENTS[min(difficulty, len(SEGMENTS) - 1)]
                queries[split].append(Query(text, intent, render_canonical(self.lexicon, intent), segment, split,
                                            forms, difficulty))
        self._split_keys = {s: {(q.intent, q.forms) for q in queries[s]} for s in SPLITS}
        return queries

    def uses_log_only(self, query: Query) -> bool:
        """Whether ``query`` uses a log-only variant: a user word of the search logs that no training query has."""
        return any(self.lexicon.form_tier[form] == "log_only" for form in query.forms)

    # -- search logs -----------------------------------------------------------------------------

    def _build_logs(self, draws: Draws) -> list[tuple[str, int, bool]]:
        """Search-log sessions ``(user query, clicked product id, purchased)``.

        Queries are rendered like user queries but favour rare and log-only
        variants (``_LOG_TIER_WEIGHTS``); combinations used by val/test queries
        are excluded. The clicked product is EXACT for the intent with
        probability 0.85 (else a same-category substitute), drawn in proportion
        to popularity: the logs of a production engine that already serves
        these users well. Purchased with probability 0.35 (exact) / 0.1.

        Also collects ``self.log_queries``: the distinct logged query texts as
        :class:`Query` objects (split ``"log"``). They carry no gold rewrite that
        any stage trains on: GRPO samples its training queries from them, since
        its rewards need no labelled rewrite (only the judge, the engine and the
        shoppers), as in production where RL runs on logged traffic.
        """
        held_out = self._split_keys["val"] | self._split_keys["test"]
        logs: list[tuple[str, int, bool]] = []
        self.log_queries: list[Query] = []
        self._log_query_texts: set[str] = set()
        attempts = 0
        while len(logs) < self.config.n_log_sessions and attempts < 20 * self.config.n_log_sessions:
            attempts += 1
            intent = self._sample_intent(draws)
            rendered = self._render(intent, draws, _LOG_TIER_WEIGHTS)
            if rendered is None or (intent, rendered[1]) in held_out:
                continue
            exact_ids, substitute_ids = self._exact_and_substitutes(intent)
            exact = draws.random() < _LOG_P_EXACT_CLICK or len(substitute_ids[0]) == 0
            ids, cumulative = exact_ids if exact else substitute_ids
            pick = int(ids[draws.weighted(cumulative)])
            purchased = draws.random() < (0.35 if exact else 0.1)
            logs.append((rendered[0], pick, purchased))
            if rendered[0] not in self._log_query_texts:
                self._log_query_texts.add(rendered[0])
                text, forms, difficulty, _ = rendered
                self.log_queries.append(Query(text, intent, render_canonical(self.lexicon, intent),
                                              SEGMENTS[min(difficulty, len(SEGMENTS) - 1)], "log", forms, difficulty))
        return logs

    def _exact_and_substitutes(self, intent: Intent) -> tuple[tuple[np.ndarray, list[float]], ...]:
        """(ids, running popularity sums) of the EXACT and the SUBSTITUTE products of an intent (cached)."""
        cached = self._pool_cache.get(intent)
        if cached is None:
            grades = self.judge.grade_products(intent)
            cached = tuple((ids, list(itertools.accumulate(self.popularity[ids].tolist())))
                           for ids in (np.flatnonzero(grades == EXACT), np.flatnonzero(grades == SUBSTITUTE)))
            self._pool_cache[intent] = cached
        return cached

    # -- text views ------------------------------------------------------------------------------

    def attribute_text(self, product: Product) -> str:
        """``"<title> | category: ... | brand: ... | colour: black | price: 699"``."""
        parts = [product.title, f"category: {product.category}", f"brand: {product.brand}"]
        parts += [f"{attr}: {value}" for attr, value in product.attrs]
        parts.append(f"price: {product.price:.0f}")
        return " | ".join(parts)

    def log_texts(self) -> list[str]:
        """Search-log sessions as text: ``"search: blk kicks mens | clicked: nike sneakers men black size 9"``."""
        return [f"search: {q} | {'purchased' if bought else 'clicked'}: {self.titles[pid]}"
                for q, pid, bought in self.logs]

    def pretrain_texts(self) -> list[str]:
        """Stage-0 corpus: titles, attribute texts, rendered search-log sessions (in that order)."""
        return self.titles + [self.attribute_text(p) for p in self.products] + self.log_texts()

    def corpus_texts(self) -> list[str]:
        """Everything a tokenizer should see: the pretraining corpus plus training queries and gold rewrites.

        Val/test queries are left out, so words only they contain stay unseen.
        """
        train = self.queries["train"]
        return self.pretrain_texts() + [q.text for q in train] + [q.gold for q in train]

    # -- relevance tagging data ------------------------------------------------------------------

    def perturbations(self, intent: Intent, draws: Draws) -> dict[int, list[str]]:
        """Candidate rewrites of ``intent`` by intended label, in catalog vocabulary.

        2: gold; gold with its phrases reordered.
        1: brand dropped; one attribute dropped; bare category (broadened); an
           attribute value (or, with all attributes named, a brand) added (narrowed).
        0: category swapped (brand and values kept); one attribute contradicted;
           brand swapped; a complement category ("protective case" for a smartphone).
        """
        lexicon = self.lexicon
        phrases = _canonical_phrases(lexicon, intent)
        gold = " ".join(phrases)
        out: dict[int, list[str]] = {2: [gold], 1: [], 0: []}
        if len(phrases) > 1:
            for _ in range(4):
                shuffled = " ".join(phrases[i] for i in draws.permutation(len(phrases)))
                if shuffled != gold:
                    out[2].append(shuffled)
                    break
        attrs = list(intent.attrs)
        category_attrs = dict(lexicon.category_attrs[intent.category])
        brands = lexicon.category_brands[intent.category]
        if intent.brand is not None:
            out[1].append(render_canonical(lexicon, Intent(intent.category, None, intent.attrs)))
        if attrs:
            i = draws.below(len(attrs))
            out[1].append(render_canonical(lexicon, Intent(intent.category, intent.brand,
                                                           tuple(attrs[:i] + attrs[i + 1:]))))
        if intent.brand is not None or attrs:
            out[1].append(intent.category)
        missing = [a for a in category_attrs if a not in intent.attr_dict()]
        if missing:
            attr = draws.pick(missing)
            added = tuple(sorted(attrs + [(attr, draws.pick(category_attrs[attr]))]))
            out[1].append(render_canonical(lexicon, Intent(intent.category, intent.brand, added)))
        elif intent.brand is None:
            out[1].append(render_canonical(lexicon, Intent(intent.category, draws.pick(brands), intent.attrs)))
        swapped = draws.pick([c for c in lexicon.category_names if c != intent.category])
        out[0].append(" ".join(swapped if p == intent.category else p for p in phrases))
        if attrs:
            attr, value = draws.pick(attrs)
            alternatives = [v for v in category_attrs[attr] if v != value]
            if alternatives:
                other = draws.pick(alternatives)
                contradicted = tuple((a, other if a == attr else v) for a, v in attrs)
                out[0].append(render_canonical(lexicon, Intent(intent.category, intent.brand, contradicted)))
        if intent.brand is not None:
            alternatives = [b for b in brands if b != intent.brand]
            if alternatives:
                out[0].append(render_canonical(lexicon, Intent(intent.category, draws.pick(alternatives),
                                                               intent.attrs)))
        complements = lexicon.complements[intent.category]
        if complements:
            out[0].append(" ".join(([intent.brand] if intent.brand else []) + [draws.pick(complements)]))
        return out

    PERTURBATION_KINDS = ("gold", "reordered", "brand dropped", "attribute dropped", "broadened", "narrowed",
                          "partial, mixed", "category swapped", "complement", "brand swapped",
                          "attribute contradicted", "unparsable")

    def perturbation_kind(self, intent: Intent, text: str) -> str:
        """Which kind of rewrite ``text`` is for ``intent`` (one of ``PERTURBATION_KINDS``), from its parse.

        The families of :meth:`perturbations`, read back from any rewrite: grade 2
        is ``gold`` (the canonical text) or ``reordered``; grade 1 names what was
        dropped or added (``partial, mixed`` when both); grade 0 names the first
        conflict in the judge's order (category, brand, attribute). A diagnostic for
        the tagger (accuracy per kind), not a second judge.
        """
        r = self.judge.parse(text)
        if r is None:
            return "unparsable"
        if r.category != intent.category:
            return "complement" if r.category in self.lexicon.complements[intent.category] else "category swapped"
        if intent.brand is not None and r.brand is not None and r.brand != intent.brand:
            return "brand swapped"
        wanted, got = intent.attr_dict(), r.attr_dict()
        if any(a in wanted and wanted[a] != v for a, v in got.items()):
            return "attribute contradicted"
        if r == intent:
            return "gold" if text == render_canonical(self.lexicon, intent) else "reordered"
        added = (r.brand is not None and intent.brand is None) or any(a not in wanted for a in got)
        dropped_brand = intent.brand is not None and r.brand is None
        dropped_attrs = any(a not in got for a in wanted)
        if added:
            return "partial, mixed" if (dropped_brand or dropped_attrs) else "narrowed"
        if r.brand is None and not r.attrs:
            return "broadened"
        if dropped_brand and dropped_attrs:
            return "partial, mixed"
        return "brand dropped" if dropped_brand else "attribute dropped"

    def relevance_examples(self, split: str, per_label: int = 1) -> list[tuple[str, str, int]]:
        """Relevance-tagging examples ``(query text, rewrite, label)`` for one split.

        For every query of the split: ``per_label`` distinct rewrites per label in
        (2, 1, 0) (fewer when a query has fewer candidates), drawn from
        ``perturbations`` with a fixed seed (label 1 always exists: a
        bare-category intent can be narrowed). Every label equals
        ``judge.grade_rewrite(query.intent, rewrite)`` (candidates that would not
        are skipped; a test checks that none are). ``per_label=1`` is the
        evaluation set; training uses more pairs per query for diversity.
        """
        check(split in SPLITS, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check(per_label >= 1, f"per_label must be >= 1 (got {per_label})")
        key = f"{split}/{per_label}"
        if key in self._relevance_cache:
            return self._relevance_cache[key]
        seed = [self.config.seed, _RNG_RELEVANCE, SPLITS.index(split)] + ([per_label] if per_label > 1 else [])
        draws = Draws(np.random.default_rng(seed))
        examples = []
        for query in self.queries[split]:
            candidates = self.perturbations(query.intent, draws)
            for label in (2, 1, 0):
                options = [t for t in candidates[label] if self.judge.grade_rewrite(query.intent, t) == label]
                if not options:
                    continue
                if per_label == 1:
                    examples.append((query.text, draws.pick(options), label))
                else:
                    options = list(dict.fromkeys(options))  # distinct rewrites
                    order = draws.permutation(len(options))[:per_label]
                    examples += [(query.text, options[i], label) for i in order]
        self._relevance_cache[key] = examples
        return examples


# ----------------------------------------------------------------------------------------------
# Command line: python -m qrw.world --stats
# ----------------------------------------------------------------------------------------------

REWRITERS = ("none", "dictionary", "gold", "broadened", "complement")
_METRICS = ("accuracy", "relevance", "recall", "ucvr")


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def world_stats(world: World, k: int = 10) -> tuple[dict, float]:
    """Counts and the lexical-gap table on test queries; also BM25 queries/s (kept out of the dict).

    Returns ``(stats, queries_per_second)``; ``stats`` is deterministic for a config.
    """
    from qrw.baselines import DictionaryRewriter, broadened_rewrites, complement_rewrites, gold_rewrites
    from qrw.metrics import rewrite_metrics, summarize
    from qrw.search import SearchEngine
    from qrw.users import UserConfig, UserSimulator

    lexicon = world.lexicon
    counts = {
        "products": len(world.products),
        "categories": len({p.category for p in world.products}),
        "brands": len({p.brand for p in world.products}),
        "canonical_terms": len(lexicon.forms),
        "variants": {tier: len(lexicon.variants(tier)) for tier in TIERS[1:]},
        "queries": {s: {seg: sum(q.segment == seg for q in world.queries[s]) for seg in SEGMENTS}
                    | {"all": len(world.queries[s])} for s in SPLITS},
        "log_sessions": len(world.logs),
        "relevance_examples_train": len(world.relevance_examples("train")),
        "pretrain_texts": len(world.pretrain_texts()),
    }
    engine = SearchEngine(world.titles, world.popularity)
    users = UserSimulator(world, UserConfig())
    test = world.queries["test"]
    dictionary = DictionaryRewriter().fit(world.queries["train"])
    rewrites = {
        "none": None,
        "dictionary": dictionary.rewrite([q.text for q in test]),
        "gold": gold_rewrites(test),
        "broadened": broadened_rewrites(test),
        "complement": complement_rewrites(test),
    }
    segments = [q.segment for q in test]
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in REWRITERS:
        per_example = rewrite_metrics(world, engine, users, test, rewrites[name], k=k)
        summary = summarize(per_example, segments)
        for segment, metrics in summary.items():
            table.setdefault(segment, {})[name] = {m: _round(metrics[m]) for m in _METRICS}
    texts = [q.text for q in test] + [q.gold for q in test]
    start = time.perf_counter()
    engine.search(texts, k=k, use_cache=False)
    qps = len(texts) / max(time.perf_counter() - start, 1e-9)
    stats = {"config": dataclasses.asdict(world.config), "counts": counts, "lexical_gap_test": table, "k": k}
    return stats, qps


def format_stats(stats: dict, qps: float | None = None, build_seconds: float | None = None) -> str:
    """Human-readable rendering of ``world_stats``."""
    c = stats["counts"]
    lines = [f"world: {c['products']} products, {c['categories']} categories, {c['brands']} brands, "
             f"{c['canonical_terms']} canonical terms",
             "variants: " + ", ".join(f"{t} {n}" for t, n in c["variants"].items()),
             f"search-log sessions: {c['log_sessions']}, pretraining texts: {c['pretrain_texts']}, "
             f"relevance examples (train): {c['relevance_examples_train']}",
             "queries:  " + "  ".join(f"{s:>6}" for s in (*SEGMENTS, "all"))]
    for split in SPLITS:
        q = c["queries"][split]
        lines.append(f"  {split:<6}  " + "  ".join(f"{q[s]:>6}" for s in (*SEGMENTS, "all")))
    k = stats["k"]
    lines.append("")
    lines.append(f"lexical gap on test queries (k = {k}; accuracy = judge grade 2; ucvr = expected purchases/user)")
    header = f"{'segment':<7} {'rewriter':<11} {'accuracy':>8} {'relevance@' + str(k):>12} " \
             f"{'recall@' + str(k):>9} {'ucvr':>7}"
    lines.append(header)
    for segment, rows in stats["lexical_gap_test"].items():
        for name in REWRITERS:
            m = rows[name]
            cells = ["-" if m[x] is None else f"{m[x]:.3f}" for x in _METRICS]
            lines.append(f"{segment:<7} {name:<11} {cells[0]:>8} {cells[1]:>12} {cells[2]:>9} {cells[3]:>7}")
    if qps is not None:
        lines.append("")
        lines.append(f"BM25 throughput: {qps:,.0f} queries/s (uncached batch of test queries and gold rewrites)")
    if build_seconds is not None:
        lines.append(f"world build: {build_seconds:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m qrw.world", description="Build the synthetic world and describe it.")
    parser.add_argument("--stats", action="store_true", help="print counts and the lexical-gap table")
    parser.add_argument("--json", action="store_true", help="with --stats: deterministic JSON instead of a table")
    parser.add_argument("--samples", type=int, default=10, help="without --stats: how many test queries to show")
    add_config_args(parser, WorldConfig)
    args = parser.parse_args(argv)
    check(args.samples >= 0, "--samples must be >= 0")
    config = config_from_args(WorldConfig, args)
    start = time.perf_counter()
    world = World(config)
    build_seconds = time.perf_counter() - start
    if args.stats:
        stats, qps = world_stats(world)
        if args.json:
            print(json.dumps(stats, sort_keys=True, indent=1))
        else:
            print(format_stats(stats, qps, build_seconds))
        return 0
    for q in world.queries["test"][: args.samples]:
        print(f"[{q.segment:<5}] {q.text!r:<45} -> {q.gold!r}")
    return 0


if __name__ == "__main__":
    run_main(main)
