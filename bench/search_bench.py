"""Search benchmark: index generated products into a temporary Whoosh index and time queries.

    .venv/bin/python bench/search_bench.py [--products 50000] [--queries 300] [--seed 7]

Names are realistic: the region's industries (古丈毛尖, 保靖黄金茶, 十八洞猕猴桃 ...) × the plan's
1,110 villages, townships and counties × grades and packaging. Prints the indexing rate and
p50/p95 latency of the engine's query (exact total + three facets + one page of 20) for
two-word, one-word, pinyin and initials queries: warm (posting bitmaps cached, as for popular
queries), right after a write (one product re-indexed before each query) and in a new process
(every cache dropped). Results are recorded in docs/benchmarks.md ("Search").
"""
import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.village_registry import load_plan_villages  # noqa: E402
from search import text  # noqa: E402
from search.engine import ProductDocument, SearchRequest  # noqa: E402
from search.whoosh_engine import WhooshEngine  # noqa: E402

# category → (label, product cores, grades, packaging, price range in fen)
INDUSTRIES = {
    "tea": ("茶叶", ["古丈毛尖", "保靖黄金茶", "高山绿茶", "古丈红茶", "黄金茶", "白茶"],
            ["明前特级", "雨前一级", "高山云雾", "手工炒制", "春茶"], ["250克礼盒", "100克罐装", "500克袋装", "50克试饮装"],
            (3_800, 68_000)),
    "berry_tea": ("莓茶", ["永顺莓茶", "野生莓茶", "莓茶嫩芽", "藤茶"], ["特级嫩尖", "一级", "龙须"],
                  ["100克罐装", "250克礼盒"], (2_800, 19_800)),
    "kiwifruit": ("猕猴桃", ["红心猕猴桃", "黄心猕猴桃", "十八洞猕猴桃", "猕猴桃"], ["精选大果", "中果", "家庭装"],
                  ["5斤装", "10斤装", "12个礼盒"], (3_900, 16_800)),
    "citrus": ("柑橘", ["椪柑", "脐橙", "冰糖橙", "蜜橘"], ["精选", "大果", "原生态"], ["5斤装", "10斤装"], (2_500, 9_900)),
    "camellia_oil": ("油茶", ["山茶油", "茶籽油", "压榨油茶"], ["冷榨", "古法", "一级"], ["2.5升", "5升", "500毫升"],
                     (8_800, 49_800)),
    "rice": ("优质稻米", ["松柏大米", "富硒大米", "优质稻米"], ["新米", "高山", "有机"], ["5千克", "10千克", "2.5千克"],
             (3_900, 12_800)),
    "vegetables": ("高山蔬菜", ["高山白菜", "高山萝卜", "辣椒", "竹笋", "蕨菜"], ["新鲜", "干制", "农家"], ["5斤装", "500克"],
                   (1_200, 5_800)),
    "herbs": ("中药材", ["杜仲", "黄柏", "金银花", "天麻"], ["精选", "切片", "野生"], ["250克", "500克"], (2_800, 26_800)),
    "pork": ("湘西黑猪", ["湘西黑猪腊肉", "黑猪香肠", "黑猪五花肉"], ["柴火熏制", "农家", "土法"], ["1千克", "500克", "2.5千克"],
             (6_800, 29_800)),
    "beef": ("湘西黄牛", ["湘西黄牛肉", "黄牛肉干"], ["鲜切", "五香", "麻辣"], ["500克", "1千克"], (5_800, 26_800)),
    "lily": ("百合", ["龙山百合", "百合干片", "鲜百合"], ["特级", "精选"], ["500克", "2.5千克"], (2_900, 13_800)),
    "buckwheat": ("苦荞", ["苦荞茶", "苦荞米", "凤凰苦荞"], ["全胚芽", "黑苦荞"], ["250克", "500克"], (1_900, 8_800)),
    "crafts": ("手工艺品", ["苗绣", "土家织锦", "蜡染", "西兰卡普"], ["手工", "非遗", "传统"], ["挂画", "围巾", "桌旗", "手提包"],
               (9_800, 168_000)),
}
EVIDENCE = ("green_food", "organic", "geographical_indication", "compliance_certificate", "other")
PHRASES = ("高山云雾，生态种植", "脱贫村合作社直供", "非遗传承，手工制作", "当季采摘，冷链直发", "绿色食品认证，可扫码溯源")


def generate(count: int, seed: int) -> list[ProductDocument]:
    """Return ``count`` realistic products from the plan's villages."""
    rng = random.Random(seed)
    villages = load_plan_villages()
    categories = list(INDUSTRIES)
    today = date(2026, 11, 29)
    docs = []
    for product_id in range(1, count + 1):
        category = rng.choice(categories)
        label, cores, grades, packs, (low, high) = INDUSTRIES[category]
        home = rng.choice(villages)
        places = [home] + ([rng.choice(villages)] if rng.random() < 0.1 else [])
        prefix = rng.choice(["", "", home.county[:2], home.township[:-1], home.name.removesuffix("村")])
        name = f"{prefix}{rng.choice(cores)} {rng.choice(grades)} {rng.choice(packs)}"
        coop = f"{home.county}{home.township}{home.name}{label}专业合作社"
        description = f"产自{home.county}{home.township}{home.name}，{rng.choice(PHRASES)}。{coop}出品。"
        expired = rng.random() < 0.03
        valid_until = today - timedelta(days=5) if expired else today + timedelta(days=rng.randint(30, 1000))
        docs.append(ProductDocument(
            product_id=product_id, name=name, description=description, category=category,
            category_label=label, cooperative=coop,
            counties=tuple(p.county for p in places), townships=tuple(p.township for p in places),
            villages=tuple(p.name for p in places),
            evidence_types=tuple(rng.sample(EVIDENCE, rng.randint(1, 2))),
            price_fen=rng.randint(low // 100, high // 100) * 100, available=rng.choice([0, 0, 12, 50, 200, 1000]),
            valid_from=int((valid_until - timedelta(days=1095)).strftime("%Y%m%d")),
            valid_until=int(valid_until.strftime("%Y%m%d")),
        ))
    return docs


QUERIES = {
    "two words + facets": ["古丈 毛尖", "十八洞 猕猴桃", "花垣 猕猴桃", "永顺 莓茶", "泸溪 椪柑", "龙山 百合",
                           "湘西 腊肉", "明前 毛尖", "保靖 黄金茶", "凤凰 苦荞", "山茶油 冷榨", "苗绣 手工",
                           "高山 白菜", "松柏 大米", "黄牛肉 麻辣", "吉首 冰糖橙"],
    "one word + facets": ["毛尖", "猕猴桃", "莓茶", "百合", "椪柑", "腊肉", "苗绣", "大米", "茶"],
    "pinyin": ["maojian", "mihoutao", "guzhang", "meicha", "baihe", "huangjincha"],
    "initials": ["gzmj", "mht", "ysmc", "lsbh", "hjc", "sbdm"],
    "two words + county filter": ["毛尖 明前", "猕猴桃 红心", "莓茶 特级"],
}
COUNTIES = ("吉首市", "凤凰县", "花垣县", "保靖县", "古丈县", "泸溪县", "永顺县", "龙山县")


def percentile(values: list[float], share: float) -> float:
    """The ``share`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def run_queries(engine: WhooshEngine, kind: str, queries: list[str], repeats: int, rng,
                before=None) -> dict:
    """Time ``repeats`` random queries of one kind; return latency stats in ms and mean hits.

    :param before: called (untimed) before each query, to put the engine in a state.
    """
    timings, totals = [], []
    for _ in range(repeats):
        q = rng.choice(queries)
        county = rng.choice(COUNTIES) if "county" in kind else None
        if before:
            before()
        started = time.perf_counter()
        hits = engine.query(SearchRequest(text=q, county=county, limit=20, today=date(2026, 11, 29)))
        timings.append((time.perf_counter() - started) * 1000)
        totals.append(hits.total)
    return {"p50": percentile(timings, 0.50), "p95": percentile(timings, 0.95), "max": max(timings),
            "hits": statistics.mean(totals)}


def main() -> None:
    """Index, query, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", help="keep the index in this directory instead of a temporary one")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: query the index already there instead of indexing again")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    started = time.perf_counter()
    text.ensure_dictionary()
    print(f"jieba dictionary + {len(text.dictionary_words())} project words: {time.perf_counter() - started:.2f} s")
    docs = generate(args.products, args.seed)
    root = args.keep or tempfile.mkdtemp(prefix="search-bench-")
    engine = WhooshEngine(root)
    try:
        if not (args.reuse and engine.is_ready()):
            started = time.perf_counter()
            count = engine.rebuild(iter(docs))
            elapsed = time.perf_counter() - started
            size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())
            print(f"indexed {count} products in {elapsed:.1f} s = {count / elapsed:.0f} docs/s, "
                  f"index {size / 2**20:.0f} MiB, CPU {time.process_time():.0f} s")

        started = time.perf_counter()
        engine.index_products(docs[:20])
        print(f"incremental update of 20 products (one commit): {(time.perf_counter() - started) * 1000:.0f} ms")

        def fresh_process():
            """Forget every cache and reader, as a newly started worker has none."""
            engine._segments.clear()
            engine.close()

        def fresh_then_warmed_up():
            """A new worker whose warm-up thread (gunicorn.conf.py) finished before the query."""
            fresh_process()
            engine.warm_up(date(2026, 11, 29))

        fresh_process()
        started = time.perf_counter()
        engine.warm_up(date(2026, 11, 29))
        print(f"warm-up of a new worker (engine.warm_up, jieba already loaded): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms")

        updates = iter(range(10**9))

        def after_write():
            """Re-index one product, as the background indexer does after a change."""
            doc = docs[next(updates) % len(docs)]
            engine.index_products([doc])

        print("latency of engine.query (exact total + 3 facets + a page of 20), ms:")
        for kind, queries in QUERIES.items():
            for q in queries:  # warm up: open the readers, fill the segment caches
                engine.query(SearchRequest(text=q, limit=20, today=date(2026, 11, 29)))
            warm = run_queries(engine, kind, queries, args.queries, rng)
            written = run_queries(engine, kind, queries, max(10, args.queries // 20), rng, before=after_write)
            cold = run_queries(engine, kind, queries, max(10, args.queries // 20), rng, before=fresh_process)
            warmed = run_queries(engine, kind, queries, max(10, args.queries // 20), rng,
                                 before=fresh_then_warmed_up)
            print(f"{kind:26s} warm p50 {warm['p50']:5.1f} p95 {warm['p95']:5.1f} max {warm['max']:5.1f}"
                  f" | after a write p50 {written['p50']:5.1f} p95 {written['p95']:5.1f}"
                  f" | new process p50 {cold['p50']:6.1f} p95 {cold['p95']:6.1f}"
                  f" | new process after warm-up p50 {warmed['p50']:5.1f} p95 {warmed['p95']:5.1f}"
                  f" | hits {warm['hits']:.0f}")
        browse = run_queries(engine, "browse", [""], args.queries, rng)
        print(f"{'browse (empty q) + facets':28s} warm p50 {browse['p50']:6.1f} ms  p95 {browse['p95']:6.1f} ms"
              f"  max {browse['max']:6.1f} ms | mean hits {browse['hits']:.0f}")
    finally:
        engine.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
