"""Faithfulness sample, its loader, and the offline faithfulness metrics on hand-made cases."""

import json
import math
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from workbench.datasets.faithfulness import (
    SOURCE_KINDS,
    Document,
    FaithfulnessDataError,
    load_faithfulness,
)
from workbench.evals.faithfulness import (
    JudgeError,
    content_tokens,
    judge_faithfulness,
    rougeL_f,
    sentence_spans,
    support_score,
    tokenize,
)

# ---------------------------------------------------------------- committed sample


def test_sample_shape():
    items = load_faithfulness()
    assert len(items) >= 60
    assert len({i.id for i in items}) == len(items)
    cells = Counter((i.lang, i.source_kind) for i in items)
    for lang in ("en", "fr", "zh"):
        for kind in SOURCE_KINDS:
            assert cells[lang, kind] >= 5, (lang, kind)
        assert sum(i.contradicts_common_belief for i in items if i.lang == lang) >= 5
    assert {i.source_kind for i in items} == set(SOURCE_KINDS)


def test_sample_answers_are_grounded_in_their_own_documents():
    items = load_faithfulness()
    full = [support_score(i.answer, i.documents, i.lang).score == 1.0 for i in items]
    assert sum(full) >= 0.95 * len(items)
    # the same answers checked against another item's documents are not supported
    for a, b in zip(items, items[1:] + items[:1]):
        assert support_score(a.answer, b.documents, a.lang).score < 0.5, (a.id, b.id)


def test_misconception_answer_is_flagged():
    item = next(i for i in load_faithfulness(langs="en") if i.id == "en-enc-01")
    parametric = "Goldfish only remember things for about three seconds. That is why they never get bored."
    result = support_score(parametric, item.documents, "en")
    assert result.score == 0.0 and len(result.unsupported) == 2


def test_langs_filter():
    fr = load_faithfulness(langs="fr")
    assert fr and {i.lang for i in fr} == {"fr"}
    assert {i.lang for i in load_faithfulness(langs=["en", "zh"])} == {"en", "zh"}
    with pytest.raises(FaithfulnessDataError, match=r"no items in xx; languages present: de, en, fr, zh"):
        load_faithfulness(langs=["en", "xx"])


# ---------------------------------------------------------------- loader errors

GOOD = {
    "id": "t-1",
    "lang": "en",
    "source_kind": "news",
    "question": "Q?",
    "documents": [{"title": "T", "text": "Body."}],
    "answer": "A.",
}


def _write(tmp_path, *records):
    path = tmp_path / "data.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{oops", r"data.jsonl, line 2: not valid JSON"),
        ("[1, 2]", r"data.jsonl, line 2: expected a JSON object, got list"),
        ({k: v for k, v in GOOD.items() if k != "question"}, r"data.jsonl, line 2: missing field 'question'"),
        ({**GOOD, "id": "t-2", "answer": "  "}, r"field 'answer' must be a non-empty string"),
        ({**GOOD, "id": "t-2", "documents": []}, r"'documents' must be a non-empty list"),
        ({**GOOD, "id": "t-2", "documents": ["text only"]}, r"documents\[0\]: a document must be an object"),
        ({**GOOD, "id": "t-2", "documents": [{"title": "T", "text": ""}]}, r"documents\[0\]: document 'text'"),
        ({**GOOD, "id": "t-2", "documents": [{"text": "x"}]}, r"documents\[0\]: document 'title' must be a string"),
        ({**GOOD, "id": "t-2", "contradicts_common_belief": "yes"}, r"must be true or false"),
        (GOOD, r"data.jsonl, line 2: duplicate id 't-1'"),
    ],
)
def test_malformed_records(tmp_path, bad, message):
    path = _write(tmp_path, GOOD, bad)
    with pytest.raises(FaithfulnessDataError, match=message):
        load_faithfulness(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(FaithfulnessDataError, match="empty"):
        load_faithfulness(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_faithfulness(tmp_path / "nope.jsonl")


def test_extra_keys_are_ignored(tmp_path):
    items = load_faithfulness(_write(tmp_path, {**GOOD, "source_url": "x"}))
    assert items[0].documents == (Document("T", "Body."),) and not items[0].contradicts_common_belief


# ---------------------------------------------------------------- tokenization and sentences


def test_tokenize():
    assert tokenize("Hello, World! It's 2.4 kg.", "en") == ["hello", "world", "it", "s", "2.4", "kg"]
    expected = ["我", "们", "在", "2024", "年", "用", "gpu", "重", "2.4", "公", "斤"]
    assert tokenize("我们在2024年用GPU，重2.4公斤。", "zh") == expected
    assert tokenize("ＧＰＵ，２０２４！", "zh-Hant") == ["gpu", "2024"]  # NFKC folds full-width forms
    assert tokenize("東京タワーへ行く", "ja") == list("東京タワーへ行く")
    assert tokenize("Straße", "de") == ["strasse"]
    # outside zh/ja a run of Han characters stays one word
    assert tokenize("das Wort 北京", "de") == ["das", "wort", "北京"]
    assert content_tokens("The bridge is not open to trucks.", "en") == ["bridge", "open", "trucks"]
    assert content_tokens("这座桥不是新的。", "zh") == ["座", "桥", "新"]
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        tokenize("x", "xx")
    with pytest.raises(ValueError, match="unknown language code"):
        rougeL_f("x", "x", "")


def test_sentence_spans_are_exact():
    text = "It weighs 2.4 kg. Really?  第三句。第四句！\nLast one"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["It weighs 2.4 kg.", "Really?", "第三句。", "第四句！", "Last one"]
    assert spans[0] == (0, 17) and spans[1] == (18, 25)
    assert sentence_spans(' He said "stop." Then left. ') == [(1, 16), (17, 27)]
    assert sentence_spans("  ... ") == []


# ---------------------------------------------------------------- support score

DOCS = [
    Document("Mill Street", "The council voted to close Mill Street to cars every Saturday from June."),
    "Traders on Mill Street are split over the plan; a cafe owner welcomed it.",
]


def test_fully_supported_answer_scores_one():
    answer = "The council voted to close Mill Street to cars every Saturday. Traders are split over the plan."
    result = support_score(answer, DOCS, "en")
    assert result.score == 1.0 and result.n_checked == 2 and result.unsupported == []
    assert [answer[s.start : s.end] for s in result.sentences] == [
        "The council voted to close Mill Street to cars every Saturday.",
        "Traders are split over the plan.",
    ]


def test_invented_sentence_is_flagged_with_its_span():
    answer = "The council voted to close Mill Street. The mayor resigned in protest on Thursday."
    result = support_score(answer, DOCS, "en")
    assert result.score == 0.5
    first, second = result.sentences
    assert first == (0, 39, True, 1.0)
    assert (second.start, second.end, second.supported) == (40, 82, False)
    # content tokens: mayor resigned protest thursday -> none in the documents
    assert second.overlap == 0.0
    assert answer[second.start : second.end] == "The mayor resigned in protest on Thursday."


def test_threshold_and_partial_overlap():
    # content tokens: council voted close mill street saturday night market -> 6 of 8 in the documents
    answer = "The council voted to close Mill Street for a Saturday night market."
    assert support_score(answer, DOCS, "en").sentences[0].overlap == pytest.approx(6 / 8)
    assert support_score(answer, DOCS, "en", threshold=0.75).score == 1.0
    assert support_score(answer, DOCS, "en", threshold=0.8).score == 0.0
    with pytest.raises(ValueError, match="threshold"):
        support_score(answer, DOCS, "en", threshold=0)


def test_chinese_support():
    docs = [{"title": "古桥", "text": "石桥村的三孔古石桥建于清代，修复时只替换了十二块石块。"}]
    answer = "石桥村的古石桥建于清代。修复费用高达三百万元，由县政府承担。"
    result = support_score(answer, docs, "zh")
    assert [(s.supported, answer[s.start : s.end]) for s in result.sentences] == [
        (True, "石桥村的古石桥建于清代。"),
        (False, "修复费用高达三百万元，由县政府承担。"),
    ]
    assert result.score == 0.5


def test_vacuous_and_empty_answers():
    result = support_score("Yes. The council voted to close Mill Street.", DOCS, "en")
    assert result.n_checked == 1 and result.score == 1.0 and result.sentences[0] == (0, 4, True, 1.0)
    assert math.isnan(support_score("", DOCS, "en").score)
    with pytest.raises(ValueError, match="documents is empty"):
        support_score("x", [], "en")
    with pytest.raises(ValueError, match="a document must be"):
        support_score("x", [42], "en")


# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_hand_cases():
    # LCS of "the cat sat on the mat" / "the cat lay on a mat" = the cat on mat: P = R = 4/6
    assert rougeL_f("the cat lay on a mat", "the cat sat on the mat", "en") == pytest.approx(4 / 6)
    assert rougeL_f("Same words, same order!", "same words same order", "en") == 1.0
    # by character: LCS 3, precision 3/3, recall 3/5 -> F = 0.75
    assert rougeL_f("黑胡椒", "一勺黑胡椒", "zh") == pytest.approx(0.75)
    assert rougeL_f("完全不同", "一勺黑胡椒", "zh") == 0.0


# ---------------------------------------------------------------- LLM judge against a local fake server


class _FakeJudge(BaseHTTPRequestHandler):
    reply: object = None
    status = 200
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        payload = json.dumps(self.reply).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    _FakeJudge.seen = []
    _FakeJudge.status = 200
    server = HTTPServer(("127.0.0.1", 0), _FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def _completion(content):
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_judge_round_trip(judge_server):
    _FakeJudge.reply = _completion('```json\n{"score": 4, "rationale": "One claim is not in the documents."}\n```')
    result = judge_faithfulness("Why?", DOCS, "Because.", judge_server, "judge-model", api_key="k123")
    assert (result.score, result.rating, result.rationale) == (0.75, 4, "One claim is not in the documents.")
    path, auth, body = _FakeJudge.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k123"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    user = body["messages"][-1]["content"]
    assert "[1] Mill Street\nThe council voted" in user and "Question: Why?" in user and "Because." in user


def test_judge_full_url_and_no_key(judge_server):
    _FakeJudge.reply = _completion('{"score": 1, "rationale": "invented"}')
    result = judge_faithfulness("q", ["doc"], "a", judge_server + "/chat/completions", "m")
    assert result.score == 0.0
    assert _FakeJudge.seen[0][:2] == ("/v1/chat/completions", None)


@pytest.mark.parametrize(
    "reply, status, message",
    [
        (_completion("I think it is fine."), 200, "no JSON object"),
        (_completion('{"score": 7, "rationale": "x"}'), 200, "from 1 to 5"),
        (_completion('{"score": "high"}'), 200, "from 1 to 5"),
        ({"error": "bad"}, 200, "not a chat completion"),
        ({"error": "overloaded"}, 503, "HTTP 503"),
    ],
)
def test_judge_errors(judge_server, reply, status, message):
    _FakeJudge.reply, _FakeJudge.status = reply, status
    with pytest.raises(JudgeError, match=message):
        judge_faithfulness("q", ["doc"], "a", judge_server, "m")


def test_judge_unreachable(monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    server = HTTPServer(("127.0.0.1", 0), _FakeJudge)
    port = server.server_port
    server.server_close()  # nothing listens on this port any more
    with pytest.raises(JudgeError, match="cannot reach"):
        judge_faithfulness("q", ["doc"], "a", f"http://127.0.0.1:{port}/v1", "m", timeout=5)
