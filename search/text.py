"""Chinese text handling for search: the jieba dictionary, analyzers, pinyin terms, highlighting.

Why one module: the index and the query must cut Chinese the same way, so the dictionary,
the analyzer and the query tokenizer live together and are set up by one function.
"""
import re
import threading
import unicodedata
from functools import lru_cache

import jieba
from jieba.analyse.analyzer import STOP_WORDS, ChineseAnalyzer
from markupsafe import Markup, escape
from pypinyin import lazy_pinyin
from whoosh.lang.porter import stem

from certification.models import CATEGORY_LABELS
from core.village_registry import COUNTIES, load_plan_villages

# Product and brand names of the region's industries (domain.md). Without them jieba cuts
# "黄金茶" or "冰糖橙" differently in a name and in a query, and recall drops to ~0.8.
PRODUCT_TERMS = (
    "湘西香伴", "湘西", "消费帮扶", "古丈毛尖", "毛尖", "保靖黄金茶", "黄金茶", "永顺莓茶", "莓茶", "藤茶",
    "龙山百合", "百合", "百合干", "松柏大米", "大米", "优质稻米", "湘西黑猪", "黑猪", "黑猪肉",
    "湘西黄牛", "黄牛", "黄牛肉", "腊肉", "香肠", "猕猴桃", "红心猕猴桃", "黄心猕猴桃", "十八洞猕猴桃",
    "椪柑", "脐橙", "冰糖橙", "柑橘", "蜜橘", "油茶", "茶油", "山茶油", "茶籽油", "苦荞", "苦荞茶",
    "苗绣", "土家织锦", "西兰卡普", "蜡染", "高山蔬菜", "中药材", "杜仲", "黄柏", "金银花", "天麻",
    "明前", "雨前", "绿茶", "红茶", "白茶", "黑茶", "野生", "手工", "礼盒", "特级", "一级",
)

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"^[a-z]+$")
_PLACE_SUFFIXES = ("街道", "社区", "县", "市", "镇", "乡", "村")

# Longest run of characters whose pinyin is indexed: 8 covers 古丈毛尖明前特级 and any place name.
MAX_PINYIN_RUN = 8

_dictionary_lock = threading.Lock()
_dictionary_ready = False


def _short_place_name(name: str) -> str | None:
    """Return a place name without its administrative suffix (古丈县 → 古丈), if two chars remain."""
    for suffix in _PLACE_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return None


def dictionary_words() -> list[str]:
    """Return the words added to jieba: products, brands, categories and every registry place.

    Built only from data packaged with the code (never from the database), so every process
    that opens the index gets the same dictionary, and index and query cut text alike.
    """
    words = set(PRODUCT_TERMS) | set(CATEGORY_LABELS.values())
    places = set(COUNTIES)
    for village in load_plan_villages():
        places.update((village.county, village.township, village.name))
    for place in places:
        words.add(place)
        short = _short_place_name(place)
        if short:
            words.add(short)
    return sorted(word for word in words if len(word) >= 2)


def ensure_dictionary() -> None:
    """Load jieba and add the project's words once per process (deterministic order)."""
    global _dictionary_ready
    if _dictionary_ready:
        return
    with _dictionary_lock:
        if _dictionary_ready:
            return
        jieba.setLogLevel(60)  # jieba prints "Building prefix dict" on stderr otherwise
        jieba.initialize()
        for word in dictionary_words():
            jieba.add_word(word)
        _dictionary_ready = True


def index_analyzer():
    """The analyzer for Chinese text fields: jieba in search mode (overlapping words)."""
    return ChineseAnalyzer()


def normalize(text: str) -> str:
    """Fold full-width characters (ＡＢＣ，１２) to plain ones and lower-case."""
    return unicodedata.normalize("NFKC", text or "").lower().strip()


def is_cjk(text: str) -> bool:
    """True when ``text`` is made only of Chinese characters."""
    return bool(text) and _CJK_RUN.fullmatch(text) is not None


def is_ascii_word(text: str) -> bool:
    """True for a run of latin letters (what a phone user types as pinyin or initials)."""
    return _ASCII_WORD.match(text) is not None


@lru_cache(maxsize=65536)
def stem_word(word: str) -> str:
    """Stem an English word the way the index analyzer does."""
    return stem(word)


def query_words(text: str) -> list[str]:
    """Cut a query into the words to match: jieba's precise mode, stop words dropped.

    Precise mode (not search mode) because each query word must be found in a document, and
    documents are indexed in search mode, which adds the shorter dictionary words of longer ones.
    """
    ensure_dictionary()
    words = []
    for word in jieba.cut(normalize(text), HMM=True):
        word = word.strip()
        if not word or word in STOP_WORDS:
            continue
        if not is_cjk(word) and not any(ch.isalnum() for ch in word):
            continue  # punctuation
        if not is_cjk(word) and len(word) <= 1 and not word.isdigit():
            continue  # the index analyzer drops lone latin letters too
        words.append(word)
    return words


def search_mode_words(word: str) -> list[str]:
    """The shorter dictionary words jieba finds inside ``word`` (used to repair unknown query words)."""
    ensure_dictionary()
    return [w for w in jieba.cut_for_search(word) if w != word and len(w) >= 2 and is_cjk(w)]


def cjk_runs(text: str) -> list[str]:
    """Return the runs of Chinese characters in ``text``."""
    return _CJK_RUN.findall(text or "")


def cjk_chars(text: str) -> set[str]:
    """Return the distinct Chinese characters of ``text``."""
    return set(_CJK_CHAR.findall(text or ""))


@lru_cache(maxsize=200_000)
def _syllables(run: str) -> tuple[str, ...]:
    """Pinyin syllables of a Chinese run, one per character, read in context (重庆 → chong qing)."""
    syllables = tuple(lazy_pinyin(run))
    if len(syllables) != len(run):  # defensive: pypinyin keeps one syllable per Hanzi
        syllables = tuple(lazy_pinyin(ch)[0] for ch in run)
    return syllables


def pinyin_terms(text: str, max_run: int = MAX_PINYIN_RUN) -> tuple[set[str], set[str]]:
    """Return (full pinyin, initials) of every 1..``max_run`` character substring of the text.

    Why substrings and not the whole text: "maojian" must find 古丈毛尖 and "gzmj" must find
    古丈毛尖明前特级; substrings make both an exact term lookup (no wildcard scans).
    Initials start at two characters: a single letter would match everything.
    """
    full: set[str] = set()
    initials: set[str] = set()
    for run in cjk_runs(text):
        syllables = _syllables(run)
        letters = [s[0] for s in syllables]
        for start in range(len(syllables)):
            for end in range(start + 1, min(start + max_run, len(syllables)) + 1):
                full.add("".join(syllables[start:end]))
                if end - start >= 2:
                    initials.add("".join(letters[start:end]))
    return full, initials


def pinyin_of(word: str) -> str:
    """Full pinyin of a Chinese word, without tones or separators."""
    return "".join(_syllables(word)) if is_cjk(word) else word


def _pinyin_spans(text: str, token: str) -> list[tuple[int, int]]:
    """Character spans of ``text`` whose full pinyin or initials equal ``token``."""
    spans = []
    for match in _CJK_RUN.finditer(text):
        syllables = _syllables(match.group())
        for start in range(len(syllables)):
            full = initials = ""
            for end in range(start, min(start + MAX_PINYIN_RUN, len(syllables))):
                full += syllables[end]
                initials += syllables[end][0]
                if full == token or (end > start and initials == token):
                    spans.append((match.start() + start, match.start() + end + 1))
                    break
                if len(full) > len(token) and len(initials) > len(token):
                    break
    return spans


def match_spans(text: str, terms) -> list[tuple[int, int]]:
    """Merged, sorted character spans of ``text`` matched by query terms.

    Chinese terms match as substrings, latin terms as pinyin/initials of Chinese characters
    or case-insensitively as latin text.
    """
    spans = []
    lowered = text.lower()
    for term in terms:
        if not term:
            continue
        if is_ascii_word(term):
            spans.extend(_pinyin_spans(text, term))
        start = lowered.find(term)
        while start != -1:
            spans.append((start, start + len(term)))
            start = lowered.find(term, start + len(term))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def highlight(text: str, terms, *, window: int | None = None) -> Markup | None:
    """Return ``text`` HTML-escaped with matches in ``<mark>``, or None if nothing matches.

    :param window: when given, cut to about this many characters around the first match.
    """
    text = text or ""
    spans = match_spans(text, terms)
    if not spans:
        return None
    start, end = 0, len(text)
    if window and len(text) > window:
        first = spans[0][0]
        start = max(0, first - window // 3)
        end = min(len(text), start + window)
        spans = [(max(s, start), min(e, end)) for s, e in spans if s < end and e > start]
    parts = [Markup("…")] if start > 0 else []
    cursor = start
    for span_start, span_end in spans:
        parts.append(escape(text[cursor:span_start]))
        parts.append(Markup("<mark>") + escape(text[span_start:span_end]) + Markup("</mark>"))
        cursor = span_end
    parts.append(escape(text[cursor:end]))
    if end < len(text):
        parts.append(Markup("…"))
    return Markup("").join(parts)
