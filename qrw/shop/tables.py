"""The hand-written tables of the synthetic shop: data only, no code.

- ``CATEGORIES``: 38 categories (phones, laptops, sneakers, fridges, ...), each
  with its user variants, brands, attributes with their values (in title
  order) and a typical price.
- ``COMPLEMENT_PAIRS``: categories bought together, never a substitute.
- ``BRAND_VARIANTS``, ``VALUE_VARIANTS``, ``UNIT_VARIANTS``: the user variants of
  brands, attribute values and numeric values with units.

Variant specs read ``"common, ... | rare, ... | log_only, ..."`` (the tiers of
:mod:`qrw.shop.lexicon`). Also the world's fixed vocabularies: splits,
difficulty segments, variant tiers, fillers, connectors and title descriptors.
"""

from __future__ import annotations

from typing import NamedTuple

SPLITS = ("train", "val", "test")
SEGMENTS = ("head", "torso", "tail")  # easy -> hard; the last is the hardest
TIERS = ("canonical", "common", "rare", "log_only")

# Words that carry no product meaning. Users add them; the judge ignores them;
# they never appear in titles. Connectors ("in black", "with 128gb") are fillers.
FILLERS = ("cheap", "best", "buy", "new", "sale", "deal", "deals", "online", "top", "discount",
           "good", "affordable", "quality", "latest", "shop", "price", "offer", "genuine")
CONNECTORS = ("in", "with", "for", "and", "the", "a", "of")
# Title words that are catalog vocabulary but no lexicon term (model-line flavour).
DESCRIPTORS = ("pro", "plus", "max", "lite", "ultra", "mini", "classic", "sport", "slim", "air",
               "edge", "prime", "neo", "essential")


# ----------------------------------------------------------------------------------------------
# Categories, complements and variants. Variant specs read "common, ... | rare, ... | log_only, ...".
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

# Hand-written brand variants. Brands missing here get generic ones (see _brand_variants in qrw.shop.lexicon).
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

# Hand-written variants of attribute values (numeric values with units use UNIT_VARIANTS).
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
UNIT_VARIANTS = {
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
TERABYTE_VARIANTS = "1 tb, 1t | 1 tera, 1000gb | 1terabyte"
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
