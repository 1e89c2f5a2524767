"""The prompt set the teacher answers to write distillation data, and its chat rendering.

Owns: a deterministic set of tens of thousands of unique, varied user prompts (factual questions,
explanations, how-to instructions, lists, advice, small talk, short stories and poems, letters,
code in several languages, comparisons, definitions, descriptions, rewriting, arithmetic), built
from topic lists x templates with a fixed seed; the held-out split (by a hash of the prompt, so
a held-out prompt never appears in training; train/prompts.txt's chat prompts are always held
out); the system messages; and the token ids of a prompt in SmolLM2's chat template (the GGUF's
template: `<|im_start|>ROLE\\nTEXT<|im_end|>\\n`, default system message when none is given).

    python train/distill_prompts.py        # counts per category and a few samples
"""

from __future__ import annotations

import hashlib
import os
import random

SEED = 20240614
HELDOUT_PER_MILLE = 30
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
OTHER_SYSTEMS = [
    "You are a friendly assistant. Answer clearly and briefly.",
    "You are a patient teacher who explains things step by step.",
    "You are a helpful assistant that writes clear, well-organized answers.",
]

COUNTRIES = """France Germany Italy Spain Portugal Japan China India Brazil Canada Mexico Egypt Kenya
Nigeria Australia Argentina Chile Peru Norway Sweden Finland Denmark Poland Greece Turkey Iran
Thailand Vietnam Indonesia Ireland Scotland Iceland Morocco Ghana Ethiopia Colombia Cuba Austria
Switzerland Belgium Netherlands Hungary Ukraine Russia Mongolia Nepal Pakistan Bangladesh
Philippines Malaysia Singapore Korea Israel Jordan Lebanon Tunisia Algeria Senegal Tanzania Uganda
Zambia Venezuela Ecuador Bolivia Uruguay Paraguay Jamaica Croatia Serbia Romania Bulgaria Czechia
Slovakia Slovenia Estonia Latvia Lithuania Georgia Armenia Cambodia Laos Madagascar Botswana
Namibia Fiji""".split()
COUNTRY_QUESTIONS = [
    "What is the capital of {c}?", "What language is spoken in {c}?", "What is {c} famous for?",
    "Tell me three interesting facts about {c}.", "What currency is used in {c}?",
    "What is the weather like in {c}?", "What food is {c} known for?",
    "Where is {c} located?", "Suggest a one-week travel plan for {c}.",
    "What is a traditional holiday in {c}?",
]
AUDIENCES = ["a five-year-old", "a high school student", "a beginner", "an expert", "my grandmother",
             "a busy manager", "a curious teenager", "someone learning English"]
EXPLAIN = [
    "Explain {x} in simple terms.", "What is {x}?", "How does {x} work?", "Why is {x} important?",
    "Explain {x} to {a}.", "Give me a short summary of {x}.", "What are common misconceptions about {x}?",
    "Can you describe {x} in two sentences?", "What is the history of {x}?",
    "What should everyone know about {x}?",
]
TASKS = """bake bread|make a cup of tea|change a flat tire|plant tomatoes|start running|learn to swim
|write a resume|prepare for a job interview|save money each month|clean a laptop keyboard
|tie a tie|fold a paper airplane|make pancakes|cook rice|brew coffee|organize my closet
|learn a new language|study for an exam|improve my handwriting|take better photos with my phone
|keep houseplants alive|train a puppy|set up a home aquarium|start a vegetable garden
|write a short poem|give a good presentation|make new friends in a new city|fall asleep faster
|reduce stress|stay focused while working|start journaling|back up my files|create a strong password
|paint a room|fix a leaky faucet|wash a wool sweater|pack for a weekend trip|plan a birthday party
|make a budget|read more books|learn to play guitar|meditate|stretch after a workout
|write a thank-you note|negotiate a salary|apologize to a friend|make a paper boat|sharpen a knife
|make a smoothie|boil an egg|iron a shirt|compost kitchen scraps|start a podcast|learn to draw""".replace("\n", "").split("|")
HOWTO = ["How do I {t}?", "Give me step-by-step instructions to {t}.", "What is the easiest way to {t}?",
         "I want to {t}. Where should I start?", "What mistakes should I avoid when I {t}?",
         "Explain how to {t} in five steps."]
GOALS = """sleeping better|staying healthy|eating well|being more productive|studying|saving money
|learning faster|staying calm|writing clearly|public speaking|traveling cheaply|working from home
|keeping a tidy home|staying motivated|making friends|being a good listener|managing time
|remembering names|drinking more water|reducing screen time|cooking at home|running a marathon
|caring for a cat|caring for a dog|staying warm in winter|staying cool in summer|reading faster""".replace("\n", "").split("|")
ADVICE = ["Give me one tip for {g}.", "Give me three tips for {g}.", "What is the best advice for {g}?",
          "List five habits that help with {g}.", "Why is {g} hard, and how can I get better at it?"]
THINGS = """fruits|vegetables|birds|ocean animals|board games|famous painters|classical composers
|planets|inventions|rivers|mountains|programming languages|musical instruments|sports|flowers
|trees|dog breeds|desserts|breakfast ideas|hobbies|careers|books for children|gift ideas
|ways to relax|indoor activities|outdoor activities|science experiments for kids|kitchen tools
|healthy snacks|words that rhyme with light|synonyms for happy|things to pack for camping""".replace("\n", "").split("|")
LISTS = ["List {n} {x}.", "Name {n} {x}.", "Give me a list of {n} {x} with one sentence each.",
         "What are {n} popular {x}?"]
MOODS = ["happy", "tired", "bored", "nervous", "excited", "sad", "stressed", "curious", "lonely", "proud"]
SMALLTALK = [
    "Hi!", "Hello, how are you?", "Good morning!", "What can you do?", "Who are you?",
    "Tell me about yourself.", "Thank you for your help!", "What's up?", "Can we chat for a bit?",
    "Do you have a favorite book?", "What do you like to talk about?", "Good night!",
] + [f"I'm feeling {m} today." for m in MOODS] + [f"I feel {m}. Can you cheer me up?" for m in MOODS] + [
    f"Tell me a joke about {x}." for x in ("cats", "computers", "teachers", "cooking", "the weather",
                                          "math", "dogs", "space", "coffee", "music")] + [
    f"What is your favorite {x}?" for x in ("color", "season", "animal", "food", "number", "word")]
CHARACTERS = """a lonely robot|a brave little mouse|an old fisherman|a young wizard|a lost puppy
|a curious girl|a retired teacher|a talking tree|a dragon who is afraid of fire|a shy astronaut
|a clever fox|a baker in a small town|a knight without a horse|a cat who wants to fly
|two best friends|a grumpy cloud|a detective in Paris|a girl who can talk to birds
|a boy who finds a map|an inventor|a lighthouse keeper|a penguin in the desert|a ghost who is kind
|a sailor|a king who loves gardening""".replace("\n", "").split("|")
EVENTS = """finds a secret door|learns to share|gets lost in a forest|wins a contest|makes a new friend
|discovers a hidden talent|travels to the moon|solves a mystery|saves the village|loses something important
|meets a stranger on a train|builds a boat|has a very strange day|receives a mysterious letter
|tries something new|gets caught in a storm|finds a treasure|keeps a promise|learns to be brave
|goes home after many years""".replace("\n", "").split("|")
STORY = ["Write a short story about {c} who {e}.", "Tell me a bedtime story about {c} who {e}.",
         "Write a 100-word story: {c} {e}.", "Write the opening paragraph of a story where {c} {e}."]
POEM_TOPICS = ["the sea", "autumn", "the moon", "friendship", "a rainy day", "the city at night", "home",
               "a cup of coffee", "the mountains", "spring flowers", "time", "a train journey", "snow",
               "the stars", "an old tree", "summer", "courage", "the wind", "a cat", "silence"]
POEM = ["Write a short poem about {x}.", "Write a haiku about {x}.", "Write one sentence about {x}.",
        "Write a limerick about {x}.", "Describe {x} in a few vivid sentences."]
LANGS = ["Python", "JavaScript", "Rust", "C", "Java", "Go", "C++", "Ruby", "Bash", "SQL"]
CODE_TASKS = """reverses a string|checks whether a number is prime|computes the factorial of n
|returns the largest element of a list|counts the vowels in a string|sorts a list of numbers
|checks whether a word is a palindrome|computes the Fibonacci numbers up to n|merges two sorted lists
|removes duplicates from a list|reads a file and counts its lines|converts Celsius to Fahrenheit
|finds the average of a list|checks whether a year is a leap year|computes the greatest common divisor
|counts word frequencies in a text|flattens a nested list|implements binary search
|returns the second smallest number|capitalizes every word in a sentence""".replace("\n", "").split("|")
CODE = ["Write a {l} function that {t}.", "How would you write code in {l} that {t}?",
        "Show me a {l} example that {t}, with comments.", "Write a short {l} program that {t}."]
CODE_QUESTIONS = ["What is a variable in {l}?", "How do loops work in {l}?", "What is {l} used for?",
                  "How do I handle errors in {l}?", "What are the basic data types in {l}?",
                  "How do I write a comment in {l}?", "What is a function in {l}?"]
RECIPIENTS = ["my landlord", "my manager", "a friend", "my teacher", "a neighbor", "a customer", "my team",
              "the city council", "a hotel", "my grandmother"]
SUBJECTS = ["a late payment", "a noisy party", "a thank-you for a gift", "asking for a day off",
            "a broken heater", "an invitation to dinner", "a change of plans", "a job application",
            "a complaint about a product", "congratulations on a new job"]
LETTER = ["Write a {tone} letter to {r} about {s}.", "Write a short {tone} email to {r} about {s}."]
TONES = ["polite", "friendly", "formal", "warm"]
PAIRS = """a virus and a bacterium|weather and climate|a lake and a sea|speed and velocity|a crocodile and an alligator
|RAM and storage|a democracy and a monarchy|tea and coffee|a star and a planet|mass and weight
|Python and JavaScript|a list and a tuple|a noun and a verb|an ocean and a sea|a frog and a toad
|a hurricane and a tornado|a loan and a grant|baking soda and baking powder|a poem and a song
|rain and snow|a city and a town|a moth and a butterfly|saving and investing""".replace("\n", "").split("|")
COMPARE = ["What is the difference between {p}?", "Compare {p}.", "How are {p} similar?"]
WORDS = """serendipity|ephemeral|resilient|ubiquitous|meticulous|benevolent|candid|diligent|eloquent
|frugal|gregarious|humble|inevitable|jubilant|lucid|nostalgia|optimistic|pragmatic|quaint|reluctant
|sincere|tenacious|vivid|whimsical|zealous|ambiguous|curious|empathy|gratitude|harmony""".replace("\n", "").split("|")
DEFINE = ["What does the word '{w}' mean?", "Define '{w}' and use it in a sentence.",
          "Give me a sentence with the word '{w}'."]
PLACES = ["a busy market", "a quiet library", "a beach at sunset", "a mountain village", "a train station",
          "a forest in autumn", "a small bakery", "a school playground", "a snowy street", "a garden in spring",
          "a city park", "an old castle", "a farm in the morning", "a crowded airport", "a desert at night"]
DESCRIBE = ["Describe {x}.", "Describe {x} using all five senses.", "Write a paragraph describing {x}."]
SENTENCES = ["the meeting is moved to friday", "i dont like this food very much",
             "We was going to the store but it were closed.", "Can you send me the report?",
             "The dog ran quickly across the big green field.", "hey, r u coming tonight?",
             "The results of the study were not what the team expected.", "Thanks for the help yesterday!"]
REWRITE = ["Rewrite this sentence to be more formal: \"{s}\"", "Fix the grammar: \"{s}\"",
           "Translate into French: \"{s}\"", "Make this sentence more friendly: \"{s}\""]
PEOPLE = """Isaac Newton|Marie Curie|Albert Einstein|Ada Lovelace|Charles Darwin|Leonardo da Vinci
|William Shakespeare|Jane Austen|Mahatma Gandhi|Nelson Mandela|Cleopatra|Julius Caesar|Galileo Galilei
|Wolfgang Amadeus Mozart|Ludwig van Beethoven|Frida Kahlo|Vincent van Gogh|Abraham Lincoln
|Martin Luther King Jr.|Alan Turing|Nikola Tesla|Florence Nightingale|Confucius|Aristotle|Plato
|Queen Victoria|Napoleon Bonaparte|Rosa Parks|Amelia Earhart|Neil Armstrong|Charles Dickens
|Mark Twain|Pablo Picasso|Johann Sebastian Bach|Grace Hopper|Louis Pasteur|Gregor Mendel
|Rachel Carson|Harriet Tubman|Marco Polo""".replace("\n", "").split("|")
PERSON = ["Who was {x}?", "What is {x} known for?", "Write a short biography of {x}.",
          "Tell me one surprising fact about {x}."]
ANIMALS = """elephants|dolphins|octopuses|penguins|owls|wolves|honeybees|ants|sharks|whales|tigers|pandas
|kangaroos|koalas|camels|parrots|frogs|butterflies|bats|horses|cows|crows|turtles|snakes|giraffes
|foxes|rabbits|salmon|eagles|jellyfish""".replace("\n", "").split("|")
ANIMAL = ["Tell me about {x}.", "Where do {x} live?", "What do {x} eat?", "Why are {x} interesting?"]
JOBS = """nurse|carpenter|software engineer|pilot|librarian|chef|electrician|farmer|dentist|architect
|journalist|firefighter|teacher|plumber|veterinarian|accountant|translator|photographer|scientist
|mechanic""".replace("\n", "").split("|")
JOB = ["What does a {x} do?", "How do I become a {x}?", "What skills does a {x} need?"]
DISHES = """pancakes|lasagna|tomato soup|fried rice|guacamole|banana bread|a Greek salad|hummus|pizza dough
|chocolate chip cookies|scrambled eggs|vegetable curry|lentil soup|apple pie|a grilled cheese sandwich
|mashed potatoes|pad thai|a fruit salad|french toast|chili""".replace("\n", "").split("|")
DISH = ["How do I make {x}?", "What are the ingredients of {x}?", "Give me a simple recipe for {x}."]
QUESTIONS = ["Why is the sky blue?", "Why do cats purr?", "How far away is the Moon?", "Why do leaves change color?",
             "How many continents are there?", "What is the largest ocean?", "What is the tallest mountain?",
             "How many days are in a leap year?", "Why do we have seasons?", "What causes thunder?",
             "How do airplanes fly?", "How do magnets work?", "Why is the ocean salty?",
             "What is the speed of light?", "How many bones are in the human body?", "Why do we dream?",
             "What is the boiling point of water?", "Who wrote Romeo and Juliet?", "Who painted the Mona Lisa?",
             "What is the smallest planet?", "How do bees make honey?", "What is the longest river in the world?",
             "Why do onions make you cry?", "How does a refrigerator work?", "What is the chemical symbol for gold?",
             "How many legs does a spider have?", "What year did the first person walk on the Moon?",
             "Why does ice float?", "What is the largest desert?", "How do vaccines work?"]


def _concepts() -> list[str]:
    out = []
    for line in """photosynthesis|gravity|electricity|magnetism|inflation|democracy|evolution|the water cycle
|climate change|black holes|vaccines|the immune system|DNA|the internet|encryption|blockchain
|machine learning|neural networks|recursion|compound interest|supply and demand|the stock market
|plate tectonics|volcanoes|earthquakes|tides|the seasons|rainbows|lightning|the greenhouse effect
|nuclear fusion|solar power|wind energy|batteries|semiconductors|the printing press|the Roman Empire
|the Renaissance|the Industrial Revolution|the French Revolution|the scientific method|probability
|statistics|algebra|calculus|prime numbers|fractions|the Pythagorean theorem|sound waves|friction
|momentum|atoms|chemical reactions|the periodic table|cells|bacteria|sleep|memory|habits|nutrition
|vitamins|exercise|taxes|credit scores|insurance|elections|copyright|open source software
|operating systems|databases|compilers|cloud computing|search engines|GPS|satellites|rockets
|the Moon|Mars|the Sun|galaxies|the Big Bang|time zones|money|trade|bees|coral reefs|deserts
|glaciers|recycling|composting""".replace("\n", "").split("|"):
        out.append(line.strip())
    return out


def _categories() -> dict[str, list[str]]:
    concepts = _concepts()
    cats: dict[str, list[str]] = {}
    cats["factual"] = [t.format(c=c) for c in COUNTRIES for t in COUNTRY_QUESTIONS]
    cats["explain"] = [t.format(x=x, a=a) for x in concepts for t in EXPLAIN for a in AUDIENCES
                       if "{a}" in t or a == AUDIENCES[0]]
    cats["explain"] += [f"{t.format(x=x, a=a)} Keep it under {n} words." for x in concepts for a in AUDIENCES[:1]
                        for t in EXPLAIN[:3] for n in (50, 100)]
    cats["howto"] = [t.format(t=x) for x in TASKS for t in HOWTO]
    cats["advice"] = [t.format(g=g) for g in GOALS for t in ADVICE]
    cats["lists"] = [t.format(n=n, x=x) for x in THINGS for t in LISTS for n in ("three", "five", "ten")]
    cats["smalltalk"] = list(SMALLTALK)
    cats["story"] = [t.format(c=c, e=e) for c in CHARACTERS for e in EVENTS for t in STORY]
    cats["poem"] = [t.format(x=x) for x in POEM_TOPICS + PLACES for t in POEM]
    cats["code"] = [t.format(l=l, t=x) for l in LANGS for x in CODE_TASKS for t in CODE]
    cats["code"] += [t.format(l=l) for l in LANGS for t in CODE_QUESTIONS]
    cats["letter"] = [t.format(tone=o, r=r, s=s) for r in RECIPIENTS for s in SUBJECTS for o in TONES for t in LETTER]
    cats["compare"] = [t.format(p=p) for p in PAIRS for t in COMPARE]
    cats["define"] = [t.format(w=w) for w in WORDS for t in DEFINE]
    cats["describe"] = [t.format(x=x) for x in PLACES for t in DESCRIBE]
    cats["rewrite"] = [t.format(s=s) for s in SENTENCES for t in REWRITE]
    cats["arithmetic"] = _arithmetic()
    cats["people"] = [t.format(x=x) for x in PEOPLE for t in PERSON]
    cats["animals"] = [t.format(x=x) for x in ANIMALS for t in ANIMAL]
    cats["jobs"] = [t.format(x=x) for x in JOBS for t in JOB]
    cats["cooking"] = [t.format(x=x) for x in DISHES for t in DISH]
    cats["questions"] = list(QUESTIONS)
    return cats


def _arithmetic() -> list[str]:
    rng = random.Random(SEED)
    out = []
    for _ in range(600):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        out.append(rng.choice([f"What is {a} + {b}?", f"What is {a} minus {b}?", f"What is {a} times {b}?",
                               f"If I have {a} apples and give away {b}, how many are left?",
                               f"A train travels {b} km per hour for {a % 12 + 1} hours. How far does it go?"]))
    return out


def _heldout(prompt: str) -> bool:
    return int(hashlib.sha1(prompt.encode()).hexdigest(), 16) % 1000 < HELDOUT_PER_MILLE


def _eval_prompts() -> set[str]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts.txt")
    if not os.path.exists(path):
        return set()
    return {l.rstrip("\n").split("|", 1)[1] for l in open(path) if l.startswith("chat|")}


def build_prompts() -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): unique, shuffled with the fixed seed, disjoint."""
    seen, everything = set(), []
    for cat in _categories().values():
        for p in cat:
            if p not in seen:
                seen.add(p)
                everything.append(p)
    random.Random(SEED).shuffle(everything)
    evals = _eval_prompts()
    held = [p for p in everything if _heldout(p) or p in evals]
    held += sorted(evals - seen)
    train = [p for p in everything if not (_heldout(p) or p in evals)]
    return train, held


def system_for(prompt: str) -> str:
    """Most prompts get the template's default system message; one in six another one."""
    h = int(hashlib.sha1(("system:" + prompt).encode()).hexdigest(), 16)
    return DEFAULT_SYSTEM if h % 6 else OTHER_SYSTEMS[h // 6 % len(OTHER_SYSTEMS)]


def chat_ids(tokenizer, prompt: str, im_start: int = 1, im_end: int = 2) -> list[int]:
    """Token ids of system + user turn + the assistant turn's opening, as the template renders
    them (control tokens as single ids, the text between them tokenized on its own)."""

    def enc(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    ids = [im_start] + enc("system\n" + system_for(prompt)) + [im_end] + enc("\n")
    ids += [im_start] + enc("user\n" + prompt) + [im_end] + enc("\n")
    return ids + [im_start] + enc("assistant\n")


def main():
    cats = _categories()
    for name, ps in cats.items():
        print(f"{name}: {len(ps)}")
    train, held = build_prompts()
    print(f"unique prompts: {len(train) + len(held)} (training {len(train)}, held out {len(held)})")
    assert not set(train) & set(held)
    for p in train[:8] + held[:4]:
        print(" ", p)


if __name__ == "__main__":
    main()
