"""EmoVIT instruction data: prompts, the Question/Answer parser, the three generators, resumable runs, the
command line and reading the files back."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from conftest import save_tiny_lm
from emotion_llama.commands import make_instructions as command
from emotion_llama.datasets.emoset import ImageRecord, read_emoset
from emotion_llama.datasets.emovit import InstructionRecord, read_instructions
from emotion_llama.errors import UserError
from emotion_llama.instructions import (
    SYSTEM_PROMPTS,
    LocalGenerator,
    OpenAICompatibleGenerator,
    Options,
    ReplyError,
    Request,
    TemplateGenerator,
    categorical_prompt,
    make_instructions,
    parse_qa,
    user_message,
)

# EmoVIT's categorical instruction, as given in the paper's code release notes (REFERENCE.md).
EMOVIT_PROMPT = (
    "Please select the emotion closest to the image from the following options: amusement, anger, awe, "
    "contentment, disgust, excitement, fear and sadness (Do not provide answers outside of the candidates "
    "options.) Please answer in the following format: Predict emotion:"
)
ANNOTATIONS = {
    "amusement_00001": {"brightness": 0.8, "colorfulness": 0.6, "scene": "amusement_park", "object": ["Dog", "Ball"],
                        "caption": "a dog chasing a ball at a fair"},
    "fear_00002": {"brightness": 0.1, "facial_expression": "fear", "human_action": "running",
                   "caption": "a man running down a dark alley"},
    "awe_00003": {"colorfulness": 0.9, "caption": "a rainbow over a canyon"},
    "sadness_00004": {"object": ["Bench"], "caption": "an empty bench in the rain"},
}


pytestmark = pytest.mark.usefixtures("restore_logging")


def make_emoset(root: Path, annotations: dict = ANNOTATIONS) -> Path:
    """A small EmoSet folder: train.json in the official 4-field form, images and annotation files."""
    entries = []
    for image_id, annotation in annotations.items():
        label = image_id.split("_")[0]
        for sub in ("image", "annotation"):
            (root / sub / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / "image" / label / f"{image_id}.jpg")
        (root / "annotation" / label / f"{image_id}.json").write_text(json.dumps({"emotion": label, **annotation}))
        entries.append([label, image_id, f"image/{label}/{image_id}.jpg", f"annotation/{label}/{image_id}.json"])
    (root / "train.json").write_text(json.dumps(entries))
    return root


@pytest.fixture
def emoset(tmp_path):
    root = make_emoset(tmp_path / "EmoSet")
    return root, read_emoset(root)


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def turns_of(record: dict) -> list[tuple[str, str]]:
    conv = record["conversations"]
    assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
    return [(conv[i]["value"], conv[i + 1]["value"]) for i in range(0, len(conv), 2)]


class Canned:
    """A generator answering from a table ``{(id, kind): reply}`` (default: one valid pair)."""

    name = "canned"

    def __init__(self, replies=None, fail_after=None):
        self.replies, self.fail_after, self.calls = replies or {}, fail_after, []

    def settings(self):
        return {"generator": self.name}

    def generate(self, requests):
        for i, r in enumerate(requests):
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise RuntimeError("generator stopped")
            self.calls.append((r.id, r.kind))
            yield i, self.replies.get((r.id, r.kind), f"Question: What about {r.id}?\nAnswer: It is {r.label}.")


# ---------------------------------------------------------------------------------------------- prompts


def test_categorical_prompt_is_emovit_text_and_follows_the_label_set():
    from emotion_llama.labels import EMOSET_LABELS

    assert categorical_prompt(EMOSET_LABELS) == EMOVIT_PROMPT  # EmoSet's index order, listed alphabetically
    assert categorical_prompt(("sad", "happy", "angry")).startswith(
        "Please select the emotion closest to the image from the following options: angry, happy and sad (Do not")
    release = categorical_prompt(EMOSET_LABELS, release_spacing=True)
    assert "options:amusement, anger" in release and release.endswith("format:  Predict emotion:")


def test_user_message_has_the_caption_and_present_attribute_lines_only():
    text = user_message("a dog  chasing a ball", "amusement", {"brightness": 0.8123, "object": ["Dog", "Ball"],
                                                               "scene": "", "human_action": None})
    assert text == "a dog chasing a ball\n\nemotion: amusement\nbrightness: 0.81\nobject: Dog, Ball"
    assert user_message("", "fear", {"facial_expression": "fear"}) == "emotion: fear\nfacial_expression: fear"


# ---------------------------------------------------------------------------------------------- parser


@pytest.mark.parametrize("reply, expected", [
    ("Question: What is shown?\nAnswer: A dog.", [("What is shown?", "A dog.")]),
    ("Sure, here it is:\n\n1. **Question:** What is shown?\n   **Answer:** A dog\n   on a lawn.\n\n"
     "2. **Question 2:** Why is it fun?\n**Answer 2:** It plays.\n\nIt jumps too.",
     [("What is shown?", "A dog\non a lawn."), ("Why is it fun?", "It plays.\n\nIt jumps too.")]),
    ("### Question 1:\nWhat colour?\n### Answer 1:\nRed.\n---\n### Question 2:\nWhere?\n### Answer 2:\nA park.",
     [("What colour?", "Red."), ("Where?", "A park.")]),
    ("Q1: Who?\nA1: A man.\nQ2: Doing what?\nA2: Running: fast.", [("Who?", "A man."), ("Doing what?", "Running: fast.")]),
    ("**Question: What mood?**\nANSWER :   calm, a: quiet.\n\nComplex question: Why?\nAnswer: The light is soft.",
     [("What mood?", "calm, a: quiet."), ("Why?", "The light is soft.")]),
    ("- Question: x? Answer: y.", [("x?", "y.")]),
])
def test_parser_reads_messy_replies(reply, expected):
    assert parse_qa(reply) == expected


@pytest.mark.parametrize("reply, reason", [
    ("", "no 'Question:'/'Answer:' pair"),
    ("This image shows a dog. It is fun.", "no 'Question:'/'Answer:' pair"),
    ("Answer: A dog.", "an answer comes without a question"),
    ("Question: What?\nAnswer:   \n", "answer 1 is empty"),
    ("Question: **\nAnswer: yes", "question 1 is empty"),
    ("Question: What?\nAnswer: A dog.\nQuestion: And then?", "question 2 has no answer"),
    ("Question: A?\nQuestion: B?\nAnswer: C.", "question 1 has no answer"),
    ("Question: A?\nAnswer: B.\nAnswer: C.", "an answer comes without a question"),
])
def test_parser_rejects_incomplete_replies(reply, reason):
    with pytest.raises(ReplyError, match=reason):
        parse_qa(reply)


# ---------------------------------------------------------------------------------------------- pipeline


def test_template_end_to_end_writes_the_three_files(emoset, tmp_path):
    root, images = emoset
    out = tmp_path / "out"
    summary = make_instructions(images, out, generator=TemplateGenerator(), options=Options(image_root=root,
                                                                                              progress=False))
    assert {k: s["records"] for k, s in summary["kinds"].items()} == {"categorical": 4, "conversation": 4,
                                                                       "reasoning": 4}
    categorical = load(out / "categorical.json")
    assert [r["id"] for r in categorical] == list(ANNOTATIONS)
    first = categorical[0]
    assert first == {"id": "amusement_00001", "image": "image/amusement/amusement_00001.jpg", "conversations": [
        {"from": "human", "value": EMOVIT_PROMPT}, {"from": "gpt", "value": "Predict emotion: amusement"}]}
    for record in load(out / "conversation.json"):
        turns = turns_of(record)
        assert len(turns) >= 2 and record["image"].startswith("image/") and set(record) == {"id", "image",
                                                                                          "conversations"}
        assert record["id"].split("_")[0] in turns[-1][1]  # the mood turn names the label
    reasoning = {r["id"]: turns_of(r) for r in load(out / "reasoning.json")}
    ((question, answer),) = reasoning["fear_00002"]
    assert "fear" not in question and answer.startswith("It evokes fear.")
    assert "rather dark" in answer and "running" in answer and "dark alley" in answer
    # Read back with the dataset reader, the same content.
    back = read_instructions(out / "reasoning.json")
    assert back[1] == InstructionRecord("fear_00002", "image/fear/fear_00002.jpg", [(question, answer)])
    # Deterministic: a fresh run writes the same bytes.
    make_instructions(images, tmp_path / "again", generator=TemplateGenerator(),
                      options=Options(image_root=root, progress=False))
    for kind in ("categorical", "conversation", "reasoning"):
        assert (out / f"{kind}.json").read_bytes() == (tmp_path / "again" / f"{kind}.json").read_bytes()


def test_unparseable_replies_are_skipped_and_reported(emoset, tmp_path, caplog):
    root, images = emoset
    generator = Canned({("fear_00002", "conversation"): "I cannot see the image.",
                        ("awe_00003", "reasoning"): "Question: Why awe?\n",
                        ("sadness_00004", "reasoning"): "Answer: Because."})
    with caplog.at_level(logging.WARNING, logger="emotion_llama"):
        summary = make_instructions(images, tmp_path, ["conversation", "reasoning"], generator,
                                    options=Options(image_root=root, progress=False))
    conv, reason = summary["kinds"]["conversation"], summary["kinds"]["reasoning"]
    assert (conv["records"], conv["skipped"], conv["skipped_ids"]) == (3, 1, ["fear_00002"])
    assert (reason["records"], reason["skipped"], reason["skipped_ids"]) == (2, 2, ["awe_00003", "sadness_00004"])
    assert [r["id"] for r in load(tmp_path / "reasoning.json")] == ["amusement_00001", "fear_00002"]
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 3 and "reasoning awe_00003: reply skipped, question 1 has no answer" in lines
    # The rerun asks nothing again (skipped replies count as done) unless told to retry them.
    again = Canned()
    make_instructions(images, tmp_path, ["conversation", "reasoning"], again, options=Options(image_root=root,
                                                                                              progress=False))
    assert again.calls == []
    summary = make_instructions(images, tmp_path, ["conversation", "reasoning"], again,
                                options=Options(image_root=root, progress=False, retry_skipped=True))
    assert sorted(again.calls) == [("awe_00003", "reasoning"), ("fear_00002", "conversation"),
                                   ("sadness_00004", "reasoning")]
    assert summary["kinds"]["reasoning"]["records"] == 4 and summary["kinds"]["reasoning"]["skipped"] == 0


def test_a_killed_run_resumes_without_duplicates(emoset, tmp_path):
    root, images = emoset
    options = Options(image_root=root, progress=False, batch_size=1)
    with pytest.raises(RuntimeError, match="generator stopped"):
        make_instructions(images, tmp_path, generator=Canned(fail_after=3), options=options)
    assert not (tmp_path / "reasoning.json").exists()  # final files only from a finished run
    progress = tmp_path / "progress" / "conversation.jsonl"
    lines = progress.read_text().splitlines()
    assert len(lines) == 1 + 2  # the settings line and the two images finished before the stop
    with progress.open("a") as f:
        f.write('{"id": "fear_00002", "rec')  # a line torn by the kill
    rest = Canned()
    summary = make_instructions(images, tmp_path, generator=rest, options=options)
    assert ("amusement_00001", "conversation") not in rest.calls and len(rest.calls) == 8 - 3
    for kind in ("categorical", "conversation", "reasoning"):
        ids = [r["id"] for r in load(tmp_path / f"{kind}.json")]
        assert ids == list(ANNOTATIONS), kind
        assert summary["kinds"][kind]["skipped"] == 0
    # Other settings in the same out_dir are refused rather than mixed in.
    with pytest.raises(UserError, match=r"conversation\.jsonl was made with other settings \(generator"):
        make_instructions(images, tmp_path, generator=TemplateGenerator(), options=options)
    make_instructions(images, tmp_path, generator=TemplateGenerator(), options=Options(
        image_root=root, progress=False, overwrite=True))
    assert "Which objects" in load(tmp_path / "conversation.json")[0]["conversations"][2]["value"]


def test_images_without_caption_need_a_captioner_or_consent(tmp_path):
    annotations = {"awe_00001": {"colorfulness": 0.9}, "fear_00002": {"brightness": 0.2, "caption": "a cave"}}
    root = make_emoset(tmp_path / "EmoSet", annotations)
    images = read_emoset(root)
    with pytest.raises(UserError, match=r"awe_00001\.jpg: no caption in its annotation .*captioner=DIR .*"
                                        r"require_caption=false"):
        make_instructions(images, tmp_path / "a", ["reasoning"], Canned(), options=Options(image_root=root))
    make_instructions(images, tmp_path / "a", ["categorical"], options=Options(image_root=root))  # needs none

    seen = []

    def captioner(paths):
        seen.extend(p.name for p in paths)
        return [f"a picture of {p.stem}" for p in paths]

    gen = Canned()
    gen.generate = lambda requests: ((i, f"Question: {r.user}\nAnswer: ok") for i, r in enumerate(requests))
    make_instructions(images, tmp_path / "b", ["reasoning"], gen, captioner, Options(image_root=root, progress=False))
    questions = [turns_of(r)[0][0] for r in load(tmp_path / "b" / "reasoning.json")]
    assert seen == ["awe_00001.jpg"] and questions[0].startswith("a picture of awe_00001\n\nemotion: awe")
    assert questions[1].startswith("a cave\n")  # the annotation's caption wins
    make_instructions(images, tmp_path / "b", ["reasoning", "conversation"], gen, captioner,
                      Options(image_root=root, progress=False))
    assert seen == ["awe_00001.jpg"]  # the caption made before is reused
    make_instructions(images, tmp_path / "c", ["reasoning"], gen, None,
                      Options(image_root=root, progress=False, require_caption=False))
    assert turns_of(load(tmp_path / "c" / "reasoning.json")[0])[0][0] == "emotion: awe\ncolorfulness: 0.9"


def test_split_turns_and_file_names_give_emovit_release_layout(emoset, tmp_path):
    root, images = emoset
    make_instructions(images, tmp_path, ["conversation"], TemplateGenerator(),
                      options=Options(image_field="name", split_turns=True, progress=False))
    records = load(tmp_path / "conversation.json")
    assert all(len(r["conversations"]) == 2 for r in records) and len(records) > len(images)
    assert records[0]["image"] == "amusement_00001.jpg"
    assert [r.id for r in read_instructions(tmp_path / "conversation.json")].count("amusement_00001") > 1


# ---------------------------------------------------------------------------------------------- HTTP API


class ChatServer:
    """An OpenAI-style chat-completions endpoint on 127.0.0.1 answering with ``script(body) -> (status, reply)``."""

    def __init__(self, script):
        self.script, self.bodies, self.headers = script, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                server.headers.append(dict(self.headers))
                status, reply = server.script(body) if self.path == "/v1/chat/completions" else (404, "no route")
                payload = ({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                           if status == 200 else {"error": {"message": reply}})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    servers = []

    def start(script):
        servers.append(ChatServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def api(url, **kw):
    return OpenAICompatibleGenerator(url, "emo-writer", **{"api_key": "k-123", "backoff": 0.01, "timeout": 5, **kw})


def test_openai_compatible_sends_the_prompts_and_retries_server_errors(emoset, chat_server, tmp_path):
    root, images = emoset
    failed = []

    def script(body):
        user, system = body["messages"][1]["content"], body["messages"][0]["content"]
        if "dark alley" in user and system == SYSTEM_PROMPTS["reasoning"]:
            return 200, "I'd rather not."  # unparseable
        if "rainbow" in user and system == SYSTEM_PROMPTS["conversation"] and not failed:
            failed.append(user)
            return 500, "overloaded"
        return 200, f"1. **Question:** What is it?\n**Answer:** {user.splitlines()[0]}"

    server = chat_server(script)
    summary = make_instructions(images, tmp_path, ["conversation", "reasoning"], api(server.url, concurrency=2),
                                options=Options(image_root=root, progress=False))
    assert len(server.bodies) == 8 + 1  # one retry
    body = next(b for b in server.bodies if "a dog chasing" in b["messages"][1]["content"])
    assert body["model"] == "emo-writer" and body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"] in (SYSTEM_PROMPTS["conversation"], SYSTEM_PROMPTS["reasoning"])
    assert body["messages"][1] == {"role": "user", "content": (
        "a dog chasing a ball at a fair\n\nemotion: amusement\nbrightness: 0.8\ncolorfulness: 0.6\n"
        "scene: amusement_park\nobject: Dog, Ball")}
    assert {h["Authorization"] for h in server.headers} == {"Bearer k-123"}
    assert summary["kinds"]["reasoning"]["skipped_ids"] == ["fear_00002"]
    assert summary["kinds"]["conversation"]["records"] == 4
    awe = next(r for r in load(tmp_path / "conversation.json") if r["id"] == "awe_00003")
    assert turns_of(awe) == [("What is it?", "a rainbow over a canyon")]


def test_openai_compatible_errors_are_one_line(emoset, chat_server, tmp_path):
    root, images = emoset
    server = chat_server(lambda body: (401, "Incorrect API key provided"))
    with pytest.raises(UserError) as err:
        make_instructions(images, tmp_path, ["reasoning"], api(server.url, concurrency=1),
                          options=Options(image_root=root, progress=False))
    assert "HTTP 401: Incorrect API key provided; check openai.model, openai.api_key" in str(err.value)
    assert "\n" not in str(err.value) and len(server.bodies) == 1  # a 4xx is not retried
    down = chat_server(lambda body: (503, "down"))
    with pytest.raises(UserError, match=r"failed 3 times, last: HTTP 503 down; check that the server is up"):
        next(api(down.url, retries=2).generate([Request("x", "reasoning", "S", "emotion: awe", "awe")]))
    assert len(down.bodies) == 3


def test_openai_compatible_run_resumes_after_the_server_stops(emoset, chat_server, tmp_path):
    root, images = emoset
    state = {"served": 0, "limit": 3}

    def script(body):
        if state["served"] >= state["limit"]:
            return 400, "quota exceeded"
        state["served"] += 1
        return 200, "Question: What?\nAnswer: " + body["messages"][1]["content"].splitlines()[0]

    server = chat_server(script)
    options = Options(image_root=root, progress=False, batch_size=2)
    generator = api(server.url, concurrency=1)
    with pytest.raises(UserError, match="quota exceeded"):
        make_instructions(images, tmp_path, generator=generator, options=options)
    state["limit"] = 100
    summary = make_instructions(images, tmp_path, generator=generator, options=options)
    answered = [b["messages"][1]["content"] for b in server.bodies]
    assert state["served"] == 8 and len(answered) == 8 + 1  # the refused request is the only one sent twice
    for kind in ("conversation", "reasoning"):
        records = load(tmp_path / f"{kind}.json")
        assert [r["id"] for r in records] == list(ANNOTATIONS)
        assert summary["kinds"][kind]["records"] == 4


# ---------------------------------------------------------------------------------------------- local LM


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_local_generator_runs_the_model_and_skips_its_gibberish(emoset, tiny_lm, tmp_path):
    root, images = emoset
    generator = LocalGenerator(tiny_lm, device="cpu", max_new_tokens=6, batch_size=3)
    calls = []
    original = generator.model.generate
    generator.model.generate = lambda **kw: calls.append(kw["input_ids"].shape) or original(**kw)
    summary = make_instructions(images[:2], tmp_path, ["conversation", "reasoning"], generator,
                                options=Options(image_root=root, progress=False))
    assert [shape[0] for shape in calls] == [3, 1]  # 2 images x 2 kinds, in batches of 3
    for kind in ("conversation", "reasoning"):
        assert summary["kinds"][kind]["skipped"] == 2 and load(tmp_path / f"{kind}.json") == []
    replies = [json.loads(line) for line in (tmp_path / "progress" / "reasoning.jsonl").read_text().splitlines()[1:]]
    assert all(isinstance(r["reply"], str) and r["skipped"] for r in replies)
    assert any(r["reply"].strip() for r in replies)  # the model did write something
    # Greedy: the same replies again.
    again = make_instructions(images[:1], tmp_path / "again", ["reasoning"], generator,
                              options=Options(image_root=root, progress=False))
    assert again["kinds"]["reasoning"]["skipped"] == 1
    (second,) = (tmp_path / "again/progress/reasoning.jsonl").read_text().splitlines()[1:]
    assert json.loads(second)["reply"] == replies[0]["reply"]


def test_local_generator_prompt_uses_the_chat_template_when_there_is_one(tiny_lm):
    generator = LocalGenerator(tiny_lm, device="cpu", max_new_tokens=2)
    request = Request("x", "reasoning", "SYSTEM TEXT", "emotion: awe", "awe")
    assert generator.prompt_text(request) == "SYSTEM TEXT\n\nemotion: awe\n\n"
    generator.tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert generator.prompt_text(request) == "<|system|>SYSTEM TEXT\n<|user|>emotion: awe\n<|assistant|>"
    generator.tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    assert generator.prompt_text(request) == "[user] SYSTEM TEXT\n\nemotion: awe"


def test_local_generator_wants_a_model_folder(tmp_path):
    with pytest.raises(UserError, match=r"local.model=.* is not a Hugging Face model folder \(no config.json\)"):
        LocalGenerator(tmp_path, device="cpu")


# ---------------------------------------------------------------------------------------------- command line


def test_command_writes_the_files_and_prints_the_summary(emoset, tmp_path, capsys):
    root, _ = emoset
    out = tmp_path / "instructions"
    assert command.main([f"data_root={root}", f"out_dir={out}", "per_label=1", "limit=3", "progress=false"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert lines[0].startswith("categorical: 3 records for 3 images (3 new)")
    assert summary["generator"] == "template" and summary["images"] == 3
    assert [r.id for r in read_instructions(out / "reasoning.json")] == list(ANNOTATIONS)[:3]
    categorical = read_instructions(out / "categorical.json")
    assert categorical[0].turns == [(EMOVIT_PROMPT, "Predict emotion: amusement")]


def test_command_with_an_openai_compatible_server(emoset, chat_server, tmp_path, capsys, monkeypatch):
    root, _ = emoset
    server = chat_server(lambda body: (200, "Question: Why?\nAnswer: " + body["messages"][1]["content"]))
    monkeypatch.setenv("EMO_KEY", "from-env")
    argv = [f"data_root={root}", f"out_dir={tmp_path}", "kinds=[reasoning]", "generator=openai_compatible",
            f"openai.base_url={server.url}/", "openai.model=org/writer-7b", "openai.api_key_env=EMO_KEY",
            "openai.concurrency=1", "progress=false"]
    assert command.main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["kinds"]["reasoning"]["records"] == 4
    assert {b["model"] for b in server.bodies} == {"org/writer-7b"} and len(server.bodies) == 4
    assert {h["Authorization"] for h in server.headers} == {"Bearer from-env"}
    assert [r.turns[0][1].splitlines()[0] for r in read_instructions(tmp_path / "reasoning.json")] == [
        a["caption"] for a in ANNOTATIONS.values()]


@pytest.mark.parametrize("args, message", [
    (["generator=gpt"], "generator=gpt: use one of template, local, openai_compatible"),
    (["generator=openai_compatible"], "openai.base_url is not set"),
    (["kinds=[categorical,captions]"], "kinds=['categorical', 'captions']: use any of categorical"),
    (["labels=plutchik"], "labels=plutchik: no such label set; use one of"),
])
def test_command_mistakes_are_one_line(emoset, tmp_path, capsys, args, message):
    root, _ = emoset
    with pytest.raises(SystemExit) as exit_:
        command.main([f"data_root={root}", f"out_dir={tmp_path}", "progress=false", *args])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line


# ---------------------------------------------------------------------------------------------- reading back


def test_reader_takes_emovit_released_records(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps([
        {"id": "12865", "image": "amusement_12865.jpg", "conversations": [
            {"from": "human", "value": "What is funny here?"}, {"from": "gpt", "value": "The hat."}]},
        {"id": 12865, "image": "amusement_12865.jpg", "conversations": [
            {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "It is too big."}]},
    ]))
    assert read_instructions(path) == [
        InstructionRecord("12865", "amusement_12865.jpg", [("What is funny here?", "The hat.")]),
        InstructionRecord("12865", "amusement_12865.jpg", [("Why?", "It is too big.")]),
    ]


GOOD = {"id": "a", "image": "a.jpg", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}


@pytest.mark.parametrize("entry, message", [
    ({"id": "b", "conversations": GOOD["conversations"]}, r"entry 1 \(id 'b'\): missing 'image'"),
    ({**GOOD, "id": "b", "conversations": [{"from": "gpt", "value": "A"}]},
     r"entry 1 \(id 'b'\): turn 0 is from 'gpt' but should be from 'human'"),
    ({**GOOD, "id": "b", "conversations": GOOD["conversations"] * 2 + [{"from": "human", "value": "Q"}]},
     r"entry 1 \(id 'b'\): the last human turn \(4\) has no gpt answer"),
    ({**GOOD, "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": " "}]},
     r"entry 1 \(id 'a'\): turn 1 \(gpt\) has an empty"),
    ({**GOOD, "conversations": []}, r"entry 1 \(id 'a'\): 'conversations' should be a non-empty list"),
    ("a.jpg", r"entry 1: expected an object"),
])
def test_reader_errors_name_the_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([GOOD, entry]))
    with pytest.raises(UserError, match=r"bad\.json: " + message):
        read_instructions(path)
    path.write_text('[{"id": "a",}]')
    with pytest.raises(UserError, match=r"bad\.json:1: not valid JSON"):
        read_instructions(path)


def test_records_built_by_hand_work_too(tmp_path):
    """Any object with id, label, image and annotation is an input image."""
    image = tmp_path / "x" / "awe_1.jpg"
    records = [ImageRecord("awe_1", "awe", image, {"caption": "a canyon"})]
    make_instructions(records, tmp_path / "o", ["categorical", "reasoning"], TemplateGenerator(),
                      options=Options(image_root=tmp_path, progress=False))
    assert load(tmp_path / "o" / "reasoning.json")[0]["image"] == "x/awe_1.jpg"
    with pytest.raises(UserError, match=r"awe_1\.jpg is not under data_root=.*image_field=name"):
        make_instructions(records, tmp_path / "p", ["categorical"], options=Options(image_root=tmp_path / "y"))


@pytest.mark.slow
def test_captioner_from_a_blip_folder_captions_each_image_once(emoset, tmp_path):
    """A random tiny BLIP saved like a real one: loaded, run on the images, its captions kept for reruns."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from emotion_llama.instructions.captions import Captioner

    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "on",
                                                 "the", "grass", "[DEC]"]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, encoder_hidden_size=16, bos_token_id=tokenizer.bos_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                eos_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        folder)

    root, images = emoset
    images = [ImageRecord(im.id, im.label, im.image, {k: v for k, v in im.annotation.items() if k != "caption"})
              for im in images[:2]]
    captioner = Captioner(folder, device="cpu", max_new_tokens=4, batch_size=2)
    batches = []
    original = captioner.model.generate
    captioner.model.generate = lambda **kw: batches.append(kw["pixel_values"].shape) or original(**kw)
    captions = captioner([im.image for im in images])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions) and batches == [(2, 3, 32, 32)]
    options = Options(image_root=root, progress=False)
    make_instructions(images, tmp_path / "out", ["reasoning"], TemplateGenerator(), captioner, options)
    cached = (tmp_path / "out" / "progress" / "captions.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["record"]["caption"] for line in cached] == captions
    make_instructions(images, tmp_path / "out", ["reasoning", "conversation"], TemplateGenerator(), captioner,
                      options)
    assert len(batches) == 2  # one call of the test, one of the first run; none on the rerun
