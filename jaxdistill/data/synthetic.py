"""A generated translation task for quick starts and tests.

The source language is English-like: SVO clauses, determiners and adjectives
before the noun, plural nouns, present / past / future tense, optional
prepositional phrase and adverb, and two clauses joined by 'and' / 'but'.

The target language is made up but fixed: every source word has one target
stem (from a hash of the word and the target language code, never from the
seed), and the grammar changes word order and adds agreement:

* SOV order, the adverb right after the subject, the PP before the verb:
  'the dog sees a cat in the house often' ->
  'lo <dog> <often> una <cat> te <house> <in> <see>at'.
* Adjectives follow the noun in mirrored order, postpositions follow the NP.
* Every noun has a gender (m/f/n); articles, demonstratives and adjectives
  agree with the noun's gender and number; plural nouns take a gender suffix.
* Verbs agree with the number of the subject in every tense (the source only
  shows it in the present: 'saw' and 'will see' are the same for both).

About 360 source word forms and 700 target word forms; sentences have 4-20
words on both sides.
"""

import dataclasses
import functools
import hashlib

import numpy as np

_NOUNS = (
    'dog cat horse bird fish child man woman boy girl teacher doctor farmer '
    'king queen friend mother father brother sister student baker singer '
    'soldier sailor house tree river city village garden table chair window '
    'door book letter song story apple bread cake flower stone road bridge '
    'mountain forest field boat car train box glass bus knife wolf mouse fox '
    'baby lady church dress key toy hat coat shoe ball cup plate lamp bed '
    'wall hill lake island star moon cloud ship'
).split()
_IRREGULAR_PLURALS = {
    'child': 'children',
    'man': 'men',
    'woman': 'women',
    'knife': 'knives',
    'wolf': 'wolves',
    'mouse': 'mice',
}
_ADJECTIVES = (
    'big small old young new red blue green white black happy sad tall '
    'short long quiet loud fast slow warm cold bright dark clean dirty rich '
    'poor strong weak kind brave clever lazy busy heavy light sweet empty '
    'full beautiful'
).split()
_TRANSITIVE = (
    'see watch like love find take give carry build buy sell open close '
    'paint wash cook read write hold bring follow help visit call meet '
    'hear eat drink want push pull catch throw draw'
).split()
_INTRANSITIVE = 'sleep run walk sing dance swim wait laugh cry sit work play'.split()
_IRREGULAR_PAST = {
    'see': 'saw',
    'find': 'found',
    'take': 'took',
    'give': 'gave',
    'build': 'built',
    'buy': 'bought',
    'sell': 'sold',
    'read': 'read',
    'write': 'wrote',
    'hold': 'held',
    'bring': 'brought',
    'meet': 'met',
    'hear': 'heard',
    'eat': 'ate',
    'drink': 'drank',
    'catch': 'caught',
    'throw': 'threw',
    'draw': 'drew',
    'sleep': 'slept',
    'run': 'ran',
    'sing': 'sang',
    'swim': 'swam',
    'sit': 'sat',
}
_PREPOSITIONS = 'in on near with under behind from to'.split()
_ADVERBS = 'often quickly slowly quietly again today always never'.split()
_NUMERALS = 'two three four five'.split()
_CONJUNCTIONS = 'and but'.split()

# Target function words: (determiner, number) -> gender -> word.
_TARGET_DETERMINERS = {
    ('the', 'sg'): {'m': 'lo', 'f': 'ka', 'n': 'te'},
    ('the', 'pl'): {'m': 'los', 'f': 'kas', 'n': 'tes'},
    ('a', 'sg'): {'m': 'un', 'f': 'una', 'n': 'uno'},
    ('some', 'pl'): {'m': 'algi', 'f': 'alga', 'n': 'algo'},
    ('this', 'sg'): {'m': 'esto', 'f': 'esta', 'n': 'este'},
    ('this', 'pl'): {'m': 'estoi', 'f': 'estai', 'n': 'estei'},
    ('that', 'sg'): {'m': 'quo', 'f': 'qua', 'n': 'que'},
    ('that', 'pl'): {'m': 'quoi', 'f': 'quai', 'n': 'quei'},
}
_SOURCE_DETERMINERS = {('this', 'pl'): 'these', ('that', 'pl'): 'those'}
NOUN_PLURAL_SUFFIX = {'m': 'ar', 'f': 'en', 'n': 'u'}
ADJECTIVE_SUFFIX = {
    ('m', 'sg'): 'o',
    ('f', 'sg'): 'a',
    ('n', 'sg'): 'e',
    ('m', 'pl'): 'os',
    ('f', 'pl'): 'as',
    ('n', 'pl'): 'es',
}
VERB_SUFFIX = {
    ('present', 'sg'): 'at',
    ('present', 'pl'): 'ant',
    ('past', 'sg'): 'ek',
    ('past', 'pl'): 'eken',
    ('future', 'sg'): 'oru',
    ('future', 'pl'): 'orun',
}
_CONSONANTS = 'bdfgklmnprstvz'
_VOWELS = 'aeiou'
_RESERVED = frozenset(w for d in _TARGET_DETERMINERS.values() for w in d.values())


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """Fixed source -> target mapping of one target language.

    nouns: source singular -> (target stem, gender in 'mfn').
    Other fields: source base form -> target stem / word.
    """

    nouns: dict
    adjectives: dict
    verbs: dict
    words: dict  # prepositions, adverbs, numerals, conjunctions


def _stem(key: str, target_lang: str, taken: set, final_consonant: bool) -> str:
    """A new 2-syllable stem from a hash of `key`, unique within `taken`."""
    for attempt in range(1000):
        digest = hashlib.sha256(f'{target_lang}/{key}/{attempt}'.encode()).digest()
        letters = []
        for i in range(2):
            letters.append(_CONSONANTS[digest[2 * i] % len(_CONSONANTS)])
            letters.append(_VOWELS[digest[2 * i + 1] % len(_VOWELS)])
        if final_consonant:
            letters.append(_CONSONANTS[digest[4] % len(_CONSONANTS)])
        stem = ''.join(letters)
        if stem not in taken and stem not in _RESERVED:
            taken.add(stem)
            return stem
    raise RuntimeError(f'no free stem for {key!r}')  # Unreachable in practice.


@functools.lru_cache(maxsize=16)
def lexicon(target_lang: str = 'tgt') -> Lexicon:
    """The lexicon for `target_lang`; depends on nothing else."""
    taken = set()
    nouns = {}
    for w in _NOUNS:
        stem = _stem('noun:' + w, target_lang, taken, final_consonant=False)
        gender = 'mfn'[
            hashlib.sha256(f'{target_lang}/gender/{w}'.encode()).digest()[0] % 3
        ]
        nouns[w] = (stem, gender)
    adjectives = {w: _stem('adj:' + w, target_lang, taken, True) for w in _ADJECTIVES}
    verbs = {
        w: _stem('verb:' + w, target_lang, taken, True)
        for w in _TRANSITIVE + _INTRANSITIVE
    }
    words = {
        w: _stem('word:' + w, target_lang, taken, False)
        for w in _PREPOSITIONS + _ADVERBS + _NUMERALS + _CONJUNCTIONS
    }
    return Lexicon(nouns, adjectives, verbs, words)


def plural(noun: str) -> str:
    """English plural of a source noun."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(('s', 'x', 'sh', 'ch')):
        return noun + 'es'
    if noun.endswith('y') and noun[-2] not in 'aeiou':
        return noun[:-1] + 'ies'
    return noun + 's'


def third_person(verb: str) -> str:
    if verb.endswith(('s', 'x', 'sh', 'ch', 'o')):
        return verb + 'es'
    if verb.endswith('y') and verb[-2] not in 'aeiou':
        return verb[:-1] + 'ies'
    return verb + 's'


def past_tense(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith('e'):
        return verb + 'd'
    if verb.endswith('y') and verb[-2] not in 'aeiou':
        return verb[:-1] + 'ied'
    return verb + 'ed'


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _sample_np(rng: np.random.Generator) -> dict:
    """A random noun phrase: determiner, 0-2 adjectives, noun, number."""
    number = 'pl' if rng.random() < 0.4 else 'sg'
    if number == 'sg':
        det = _pick(rng, ('the', 'the', 'the', 'a', 'a', 'a', 'this', 'that'))
    else:
        det = _pick(rng, ('the', 'the', 'some', 'these', 'those') + tuple(_NUMERALS))
        det = {'these': 'this', 'those': 'that'}.get(det, det)
    n_adjs = _pick(rng, (0, 0, 0, 1, 1, 2))
    adjs = tuple(
        _ADJECTIVES[i] for i in rng.choice(len(_ADJECTIVES), n_adjs, replace=False)
    )
    return {'noun': _pick(rng, _NOUNS), 'number': number, 'det': det, 'adjs': adjs}


def _sample_clause(rng: np.random.Generator) -> dict:
    transitive = rng.random() < 0.75
    clause = {
        'subj': _sample_np(rng),
        'verb': _pick(rng, _TRANSITIVE if transitive else _INTRANSITIVE),
        'tense': _pick(rng, ('present', 'past', 'future')),
        'obj': _sample_np(rng) if transitive else None,
        'prep': None,
        'pp': None,
        'adv': None,
    }
    if rng.random() < 0.4:
        clause['prep'], clause['pp'] = _pick(rng, _PREPOSITIONS), _sample_np(rng)
    if rng.random() < 0.3:
        clause['adv'] = _pick(rng, _ADVERBS)
    return clause


def _source_np(np_: dict) -> list[str]:
    words = list(np_['adjs']) + [
        np_['noun'] if np_['number'] == 'sg' else plural(np_['noun'])
    ]
    det = _SOURCE_DETERMINERS.get((np_['det'], np_['number']), np_['det'])
    if det == 'a' and words[0][0] in 'aeiou':
        det = 'an'
    return [det] + words


def _target_np(np_: dict, lex: Lexicon) -> list[str]:
    stem, gender = lex.nouns[np_['noun']]
    number = np_['number']
    noun = stem if number == 'sg' else stem + NOUN_PLURAL_SUFFIX[gender]
    if np_['det'] in _NUMERALS:
        det = lex.words[np_['det']]
    else:
        det = _TARGET_DETERMINERS[(np_['det'], number)][gender]
    adjs = [
        lex.adjectives[a] + ADJECTIVE_SUFFIX[(gender, number)]
        for a in reversed(np_['adjs'])
    ]
    return [det, noun] + adjs


def _source_clause(c: dict) -> list[str]:
    verb, tense = c['verb'], c['tense']
    if tense == 'present':
        verbs = [third_person(verb) if c['subj']['number'] == 'sg' else verb]
    elif tense == 'past':
        verbs = [past_tense(verb)]
    else:
        verbs = ['will', verb]
    words = _source_np(c['subj']) + verbs
    if c['obj']:
        words += _source_np(c['obj'])
    if c['pp']:
        words += [c['prep']] + _source_np(c['pp'])
    if c['adv']:
        words.append(c['adv'])
    return words


def _target_clause(c: dict, lex: Lexicon) -> list[str]:
    words = _target_np(c['subj'], lex)
    if c['adv']:
        words.append(lex.words[c['adv']])
    if c['obj']:
        words += _target_np(c['obj'], lex)
    if c['pp']:
        words += _target_np(c['pp'], lex) + [lex.words[c['prep']]]
    suffix = VERB_SUFFIX[(c['tense'], c['subj']['number'])]
    return words + [lex.verbs[c['verb']] + suffix]


def generate_pairs(
    n: int,
    seed: int,
    *,
    target_lang: str = 'tgt',
    min_words: int = 4,
    max_words: int = 20,
) -> list[tuple[str, str]]:
    """`n` (source, target) sentence pairs, deterministic for (seed, target_lang).

    The sentences depend on `seed`; the lexicon depends only on `target_lang`,
    so two calls with the same seed and different target languages give the
    same source sentences (a one-to-many corpus). Both sides have between
    `min_words` and `max_words` words (longer/shorter samples are redrawn).
    """
    if n < 0:
        raise ValueError(f'n must be >= 0, got {n}')
    rng = np.random.default_rng(seed)
    lex = lexicon(target_lang)
    pairs = []
    while len(pairs) < n:
        clauses = [_sample_clause(rng)]
        if rng.random() < 0.2:
            clauses += [_pick(rng, _CONJUNCTIONS), _sample_clause(rng)]
        src, tgt = [], []
        for c in clauses:
            src += [c] if isinstance(c, str) else _source_clause(c)
            tgt += [lex.words[c]] if isinstance(c, str) else _target_clause(c, lex)
        if all(min_words <= len(s) <= max_words for s in (src, tgt)):
            pairs.append((' '.join(src), ' '.join(tgt)))
    return pairs
