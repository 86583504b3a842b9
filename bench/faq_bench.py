"""FAQ bot benchmark on the shipped store FAQ and its evaluation set, in one run.

1. Retrieval: top-1 accuracy, top-3 recall, hand-off recall on uncovered questions and false
   hand-offs on covered ones, for the blend (FTS5 + sentence encoder) and for FTS5 alone, side
   by side; then the hand-off threshold swept. Targets: top-1 >= 0.90, top-3 >= 0.97, hand-off
   recall >= 0.90, false hand-offs <= 0.05. The same table for a second domain (an IT helpdesk
   FAQ with questions written apart from it) shows how far the settings carry over.
2. Grounded answers: the real SmolLM2 answers covered questions through Session (temperature 0);
   the share of answers holding every key fact (numbers, amounts, times, names, addresses) of
   the entry they cite, and the mean share of facts kept.
3. Latency: retrieval per turn on a generated 1,000-entry knowledge base, p50/p95, FTS5 alone
   and the blend (target p95 <= 5 ms).

Run: `.venv/bin/python bench/faq_bench.py [--answers N] [--model FILE.gguf] [--skip-answers]`.
"""

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chat_bench import find_model  # noqa: E402
from chatbot.engines.base import GenerationOptions  # noqa: E402
from chatbot.faq.evaluation import HANDOFF, LabelledQuestion, evaluate, load_questions  # noqa: E402
from chatbot.faq.knowledge_base import KnowledgeBase  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STORE_FAQ = REPO / "data/faq/store_faq.jsonl"
STORE_EVAL = REPO / "data/eval/faq_eval.jsonl"
STORE_FOLLOW_UPS = REPO / "data/eval/faq_followups.jsonl"
HELPDESK_FAQ = REPO / "data/faq/helpdesk_faq.jsonl"
HELPDESK_EVAL = REPO / "data/eval/helpdesk_eval.jsonl"
# Key facts: amounts, numbers (day counts, hours, phone numbers), emails, web addresses, and
# names: capitalised words that do not start a sentence (UPS, DHL Express, Klarna, Portland).
NUMERIC = re.compile(
    r"\$[\d,]+(?:\.\d+)?|\b\d(?:[\d,\-]*\d)?(?:\.\d+)?(?:\s?(?:am|pm|%))?"
    r"|[\w.]+@[\w.]+\w|\b[\w-]+\.example\b"
)
NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:[ -][A-Z][A-Za-z]*)*")


def labelled(path: Path, kb: KnowledgeBase) -> list[LabelledQuestion]:
    """An evaluation file's questions, read as `chatbot faq-eval` reads them."""
    questions, warnings = load_questions(path, {entry.id for entry in kb.entries})
    assert not warnings, warnings
    return questions


def bench_retrieval(
    faq: Path, eval_path: Path, index_dir: Path
) -> tuple[KnowledgeBase, list[LabelledQuestion]]:
    """The retrieval table and threshold sweep for one knowledge base and its questions."""
    header = ("signals", "top-1", "top-3", "hand-off recall", "false hand-offs")
    kbs, results, questions = {}, {}, []
    for label, semantic in (("FTS5 + encoder", True), ("FTS5 alone", False)):
        kb = KnowledgeBase.open(faq, index_dir=index_dir / label[:4], semantic=semantic)
        if not questions:
            questions = labelled(eval_path, kb)
            print(f"Retrieval on {faq.name} with {len(questions)} questions "
                  f"({sum(q.expected == HANDOFF for q in questions)} uncovered):")  # fmt: skip
            print(f"  {header[0]:<22} {header[1]:>6} {header[2]:>6} {header[3]:>16} "
                  f"{header[4]:>16}")  # fmt: skip
        kbs[semantic], results[semantic] = kb, evaluate(kb, questions)
        got = results[semantic].in_use
        print(f"  {label:<22} {got.top1:>6.3f} {got.top3:>6.3f} "
              f"{got.handoff_recall:>16.3f} {got.false_handoffs:>16.3f}")  # fmt: skip
    kbs[False].close()
    kb, blend = kbs[True], results[True]
    print(f"  targets                >=0.90 >=0.97 {'>=0.90':>16} {'<=0.05':>16}")
    print(f"  threshold sweep (FTS5 + encoder; default {kb.confidence}):")
    for got in blend.rates:
        print(f"    {got.threshold:.2f}: hand-off recall {got.handoff_recall:.3f}, "
              f"false hand-offs {got.false_handoffs:.3f}")  # fmt: skip
    print(f"  uncovered questions answered at the default: {blend.answered_uncovered}")
    return kb, questions


def bench_follow_ups(kb: KnowledgeBase) -> None:
    """Second messages of a chat ("And for PayPal?"), looked up alone and with the first."""
    follow_ups = labelled(STORE_FOLLOW_UPS, kb)
    print(f"  follow-ups ({len(follow_ups)} second messages: elliptical, new topics, uncovered):")
    for label, with_previous in (("alone", False), ("with the message before", True)):
        questions = [q if with_previous else replace(q, previous=None) for q in follow_ups]
        got = evaluate(kb, questions).in_use
        print(f"    {label:<24} top-1 {got.top1:.3f}, top-3 {got.top3:.3f}, hand-off recall "
              f"{got.handoff_recall:.3f}, false hand-offs {got.false_handoffs:.3f}")  # fmt: skip


def bench_near_topic(kb: KnowledgeBase) -> None:
    """Why the threshold cannot separate near-topic questions: the knowledge base's own data.

    Each phrasing (question or alternate) is a question some entry covers. Its best cosine with
    the other phrasings of its entry is a covered paraphrase; its best cosine with the other
    entries, its own left out, is a near-topic question the knowledge base does not cover.
    """
    if kb.encoder is None:
        return
    owners = [e.id for e in kb.entries for _ in (e.question, *e.alternates)]
    texts = [t for e in kb.entries for t in (e.question, *e.alternates)]
    vectors = kb.encoder.encode(texts)
    cosines = vectors @ vectors.T
    own, other = [], []
    for i, owner in enumerate(owners):
        same = [cosines[i, j] for j, o in enumerate(owners) if o == owner and j != i]
        own += [max(same)] if same else []
        other.append(max(cosines[i, j] for j, o in enumerate(owners) if o != owner))
    above = sum(c >= kb.confidence for c in other) / len(other)
    print(f"  leave-one-entry-out ({len(texts)} phrasings): median cosine of a paraphrase "
          f"{statistics.median(own):.3f}, of the best other entry {statistics.median(other):.3f}; "
          f"{above:.0%} of near-topic phrasings reach the threshold {kb.confidence}")  # fmt: skip


def key_facts(text: str) -> list[str]:
    """The facts an answer from this entry must keep, each once, in order."""
    facts = [m.group(0) for m in NUMERIC.finditer(text)]
    for sentence in re.split(r"(?<=[.!?:])\s+", text):
        facts += [m.group(0) for m in NAME.finditer(sentence) if m.start() > 0]
    return list(dict.fromkeys(facts))


def cited_entry(answer: str, sources: tuple[str, ...], kb: KnowledgeBase):
    """The entry an answer cites: an [id] it names, else the best retrieved entry."""
    for faq_id in re.findall(r"\[([^\]]+)\]", answer):
        if (entry := kb.entry(faq_id.strip())) is not None:
            return entry
    return kb.entry(sources[0]) if sources else None


def bench_answers(
    kb: KnowledgeBase, questions: list[LabelledQuestion], count: int, model: Path | None
) -> None:
    from chatbot.conversation.session import Session, TurnResult
    from chatbot.engines.llama import LlamaEngine
    from chatbot.faq.policy import FaqPolicy
    from chatbot.store.store import Store

    path = find_model(model)
    covered = [q for q in questions if q.expected != HANDOFF]
    step = max(1, len(covered) // count)
    chosen = covered[::step][:count]
    engine = LlamaEngine(path, n_ctx=2048)
    options = GenerationOptions(max_tokens=160, temperature=0.0)
    complete, kept, answered, flagged, tokens, loops = 0, [], 0, 0, [], 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        for row in chosen:
            session = Session(engine, store, policy=FaqPolicy(kb), options=options)
            result = [i for i in session.send(row.question) if isinstance(i, TurnResult)][0]
            if result.handoff:
                continue
            answered += 1
            entry = cited_entry(result.answer, result.sources, kb)
            facts = key_facts(entry.answer)
            present = [f for f in facts if f.lower() in result.answer.lower()]
            kept.append(len(present) / len(facts) if facts else 1.0)
            complete += len(present) == len(facts)
            flagged += bool(result.unsupported)
            tokens.append(result.stats.completion_tokens)
            loops += result.stats.stop_reason == "repetition"
        store.close()
    engine.close()
    print(f"\nGrounded answers from {path.name} ({len(chosen)} covered questions, "
          f"{answered} answered, {len(chosen) - answered} handed off):")  # fmt: skip
    if answered:
        print(f"  answers holding every key fact of the cited entry: {complete / answered:.3f}")
        print(f"  mean share of the cited entry's key facts kept:    {statistics.mean(kept):.3f}")
        print(f"  answers stating a number or address the entry lacks (flagged to the user): "
              f"{flagged} of {answered}")  # fmt: skip
        print(f"  reply length: median {statistics.median(tokens):.0f} tokens; "
              f"{loops} of {answered} cut off for repeating themselves")  # fmt: skip


# The generated knowledge base for the latency test: every (thing, action, place) is an entry.
KB_THINGS = [
    "invoice",
    "parcel",
    "voucher",
    "subscription",
    "locker",
    "badge",
    "ticket",
    "laptop",
    "printer",
    "charger",
    "booking",
    "membership",
    "refund",
    "password",
    "receipt",
    "seat",
    "warranty-card",
    "loyalty-card",
    "gift-box",
    "time-slot",
]
KB_ACTIONS = [
    "cancel",
    "renew",
    "replace",
    "transfer",
    "track",
    "upgrade",
    "return",
    "pay-for",
    "change",
    "activate",
    "print",
    "share",
    "extend",
    "split",
    "reserve",
]
KB_PLACES = [
    "online",
    "in the app",
    "by phone",
    "at the desk",
    "abroad",
    "on weekends",
    "for a friend",
]


def generated_kb(path: Path, size: int) -> list[str]:
    """A knowledge base of `size` distinct entries, and questions that paraphrase some."""
    rng = random.Random(7)
    combos = [(t, a, p) for t in KB_THINGS for a in KB_ACTIONS for p in KB_PLACES]
    rng.shuffle(combos)
    lines, questions = [], []
    for n, (thing, action, place) in enumerate(combos[:size]):
        thing, action = thing.replace("-", " "), action.replace("-", " ")
        entry = {
            "id": f"e{n}",
            "question": f"How do I {action} my {thing} {place}?",
            "answer": f"To {action} a {thing} {place}, open section {n}, step {n % 9 + 1}.",
            "alternates": [f"{action} {thing} {place}", f"Can I {action} a {thing} {place}?"],
        }
        lines.append(json.dumps(entry))
        questions.append(f"is it possible to {action} the {thing} {place} please")
    path.write_text("\n".join(lines) + "\n")
    return questions[:: max(1, size // 200)]


def bench_latency(index_dir: Path, size: int) -> None:
    path = index_dir / f"generated-{size}.jsonl"
    questions = generated_kb(path, size)
    print(f"\nRetrieval latency per turn, generated {size}-entry knowledge base "
          f"({len(questions)} questions):")  # fmt: skip
    rows = (
        ("FTS5 alone", False, False),
        ("FTS5 + encoder", True, False),
        ("  + follow-up", True, True),  # each question read with the one before it as well
    )
    for label, semantic, follow_up in rows:
        start = time.perf_counter()
        kb = KnowledgeBase.open(path, index_dir=index_dir / label[:4], semantic=semantic)
        built = time.perf_counter() - start
        wall, cpu = _timed_lookups(kb, questions, follow_up)
        p50, p95 = statistics.median(wall), statistics.quantiles(wall, n=20)[-1]
        cpu95 = statistics.quantiles(cpu, n=20)[-1]
        print(f"  {label:<16} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  (CPU p95 {cpu95:6.2f} ms;"
              f" index built in {built:.1f} s)  target p95 <= 5 ms: "
              f"{'met' if p95 <= 5 else 'MISSED'}")  # fmt: skip
        kb.close()


def _timed_lookups(
    kb: KnowledgeBase, questions: list[str], follow_up: bool
) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each lookup, after five to warm the page cache."""
    for question in questions[:5]:
        kb.retrieve(question)
    wall, cpu = [], []
    for before, question in zip([None, *questions], questions, strict=False):
        w, c = time.perf_counter(), time.process_time()
        kb.retrieve(question, previous=before if follow_up else None)
        wall.append(1000 * (time.perf_counter() - w))
        cpu.append(1000 * (time.process_time() - c))
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=40, help="covered questions to answer")
    parser.add_argument("--model", type=Path, help="GGUF for the answers (default: SmolLM2)")
    parser.add_argument("--skip-answers", action="store_true", help="retrieval numbers only")
    parser.add_argument(
        "--size", type=int, default=1000, help="entries for the latency test (0: skip it)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print("Second domain, settings unchanged:")
        bench_retrieval(HELPDESK_FAQ, HELPDESK_EVAL, Path(tmp) / "helpdesk")[0].close()
        print()
        kb, questions = bench_retrieval(STORE_FAQ, STORE_EVAL, Path(tmp) / "store")
        bench_near_topic(kb)
        bench_follow_ups(kb)
        if not args.skip_answers:
            bench_answers(kb, questions, args.answers, args.model)
        kb.close()
        if args.size > 0:
            bench_latency(Path(tmp), args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
