"""Chinese text handling: dictionary, query words, pinyin terms and escaped highlighting."""
import jieba

from search import text


def test_pinyin_terms_cover_full_pinyin_and_initials_of_every_run():
    full, initials = text.pinyin_terms("古丈毛尖 明前特级")
    assert {"maojian", "guzhang", "guzhangmaojian", "mao", "mingqian"} <= full
    assert {"gzmj", "mj", "gz", "mqtj"} <= initials
    # Initials of a single character would match almost everything.
    assert "g" not in initials
    # Spaces end a run: no term spans 尖 and 明.
    assert "jianming" not in full


def test_pinyin_reads_characters_in_context():
    full, _ = text.pinyin_terms("长乐乡")
    assert "changle" in full


def test_dictionary_has_products_brands_and_registry_places():
    words = text.dictionary_words()
    assert {"古丈毛尖", "保靖黄金茶", "十八洞村", "十八洞", "默戎镇", "默戎", "古丈县", "古丈"} <= set(words)
    assert words == sorted(words), "added in a fixed order so every process cuts text alike"


def test_index_and_query_cut_product_names_alike():
    text.ensure_dictionary()
    indexed = {token.text for token in text.index_analyzer()("保靖黄金茶 特级 冰糖橙")}
    for query in ("黄金茶", "保靖黄金茶", "冰糖橙"):
        assert set(text.query_words(query)) <= indexed, query
    assert "古丈毛尖" in jieba.lcut("古丈毛尖明前特级")


def test_query_words_drop_punctuation_and_stop_words():
    assert text.query_words("古丈，毛尖！的") == ["古丈", "毛尖"]
    assert text.query_words("  ＧＺＭＪ ") == ["gzmj"]


def test_highlight_escapes_html_and_marks_matches():
    marked = text.highlight('<script>alert("毛尖")</script>', ["毛尖"])
    assert str(marked) == '&lt;script&gt;alert(&#34;<mark>毛尖</mark>&#34;)&lt;/script&gt;'


def test_highlight_marks_the_characters_a_pinyin_query_matched():
    assert str(text.highlight("古丈毛尖 明前特级", ["gzmj"])) == "<mark>古丈毛尖</mark> 明前特级"
    assert str(text.highlight("古丈毛尖 明前特级", ["maojian"])) == "古丈<mark>毛尖</mark> 明前特级"


def test_highlight_cuts_long_text_around_the_first_match():
    description = "高山云雾" * 30 + "明前手工采制" + "茶园" * 30
    marked = str(text.highlight(description, ["明前"], window=40))
    assert marked.startswith("…") and marked.endswith("…")
    assert "<mark>明前</mark>" in marked
    assert text.highlight("没有匹配", ["毛尖"]) is None
