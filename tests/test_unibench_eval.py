"""MER-UniBench evaluation: the open-vocabulary question, answer -> emotion words (rule, local LM, OpenAI-compatible
server, each cached), each metric kind wired to hand-computed figures, the nine-set table with sets missing, the
synthetic sets written on demand, and the refusals that come before the model loads."""

import csv
import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF_DIR, save_tiny_checkpoint, save_tiny_lm
from emotion_llama.commands import evaluate as eval_command
from emotion_llama.datasets.common import Sample, write_subtitles
from emotion_llama.datasets.merr import write_merr_txt
from emotion_llama.datasets.synthetic.unibench import (
    RELATED_WORDS,
    write_synthetic_unibench,
    write_unibench_set,
)
from emotion_llama.datasets.synthetic.wheel import write_wheel_folder
from emotion_llama.datasets.unibench import UNIBENCH_SETS, parse_openset, read_clip_names, read_unibench
from emotion_llama.errors import UserError
from emotion_llama.evaluation import extraction, openset, unibench
from emotion_llama.evaluation.extraction import (
    EXTRACT_PROMPT,
    RuleExtractor,
    read_list,
    read_sentiment,
)
from emotion_llama.evaluation.openset import EmotionWheels, set_scores
from emotion_llama.evaluation.unibench import OPEN_INSTRUCTION, PUBLISHED, evaluate_unibench

pytestmark = pytest.mark.usefixtures("restore_logging")

# Stub answers (clip -> text) for the wiring tests; the wheel is datasets/synthetic/wheel.py's.
ANSWERS = {
    "clip_001": "He is furious.",                  # angry: a hit in every wheel
    "clip_002": "She looks sad.",                  # happy: a miss
    "clip_003": "Sorrowful, maybe a bit happy.",  # sad: a hit
    "clip_010": "Nothing to say.",                 # neutral: maps to no wheel, left out
    "clip_005": "Happy, cheerful.",                # sentiment +: positive
    "clip_006": "Anxious, but happy.",             # sentiment -: a tie, neutral (read as negative)
    "clip_007": "Angry.",                          # sentiment 0: dropped
    "clip_008": "Calm.",                           # sentiment +: neutral (read as negative)
    "clip_009": "Happy.",                          # sentiment -: positive
    "clip_011": "Joyful.",                         # sentiment +: positive
}
BASIC = {"clip_001": "angry", "clip_002": "happy", "clip_003": "sad", "clip_010": "neutral"}
SCORES = {"clip_005": 2.0, "clip_006": -1.5, "clip_007": 0.0, "clip_008": 1.0, "clip_009": -0.5, "clip_011": 3.0}
OPEN = {"clip_001": ["angry", "furious"], "clip_002": ["happy", "worried"], "clip_003": []}
OPEN_ANSWERS = {"clip_001": "Clearly angry.", "clip_002": "Happy and sad at once.", "clip_003": "Happy."}


def cfg_for(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")  # untrained: answers are noise


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return write_wheel_folder(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    """MER2023, CMU-MOSI and OV-MERD+ folders naming merr_folder's clips (the others missing)."""
    root = tmp_path_factory.mktemp("unibench")
    write_unibench_set("mer2023", root / "mer2023", [Sample(n, label) for n, label in BASIC.items()])
    write_unibench_set("cmumosi", root / "cmumosi", SCORES)
    write_unibench_set("ovmerdplus", root / "ovmerdplus", OPEN, {n: "" for n in OPEN})
    return root


def run_cfg(merr_folder, checkpoint, run_dir, *extra):
    return cfg_for([f"paths.output_dir={run_dir.parent}", f"checkpoint={checkpoint}", f"run_dir={run_dir}",
                    f"data.features_dir={merr_folder}", "data.videos_dir=null", "eval.extract_missing=false",
                    f"data.subtitles={merr_folder}/subtitles.csv", "device=cpu", *extra])


@pytest.fixture
def stub_answers(monkeypatch):
    """generate_answers replaced by fixed answers; returns the clips asked, in order."""
    asked = []

    def fake(core, items, features, batch_size, max_new_tokens, desc=""):
        asked.extend(clip for clip, _ in items)
        assert all(clip in features for clip, _ in items)
        return [ANSWERS[clip] for clip, _ in items]

    monkeypatch.setattr(unibench, "generate_answers", fake)
    return asked


def predictions(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


# ---------------------------------------------------------------------------------------------- answering


def test_open_vocabulary_answers_on_a_tiny_checkpoint(merr_folder, checkpoint, wheel, sets, tmp_path, monkeypatch):
    seen = []
    original = unibench.InferenceCore.prompts

    def spy(self, subtitles, task, instruction, media="video", answer_room=0):
        seen.append((task, instruction, media, answer_room))
        return original(self, subtitles, task, instruction, media, answer_room)

    monkeypatch.setattr(unibench.InferenceCore, "prompts", spy)
    cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", "data=unibench_ovmerdplus", f"data.root={sets}/ovmerdplus",
                  f"paths.emotion_wheel={wheel}", "eval.max_new_tokens=6", "eval.batch_size=2")
    assert cfg.data.kind == "unibench" and cfg.extractor.kind == "rule"
    report = evaluate_unibench(cfg)
    assert seen and all(s == ("emotion", OPEN_INSTRUCTION, "video", 6) for s in seen)
    rows = predictions(tmp_path / "run" / "predictions.csv")
    assert list(next(iter(rows.values()))) == ["name", "answer", "labels", "sentiment", "truth", "result"]
    assert list(rows) == list(OPEN) and rows["clip_001"]["truth"] == "[angry, furious]"
    assert all(isinstance(r["answer"], str) and r["labels"].startswith("[") for r in rows.values())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["set"] == "ovmerdplus" and metrics["answered"] == 3 and metrics["missing"]["count"] == 0
    assert {"fscore", "precision", "recall", "per_wheel"} <= set(metrics)
    assert report["instruction"] == OPEN_INSTRUCTION and report["max_new_tokens"] == 6


def test_set_configs_compose_with_their_own_defaults():
    for key in UNIBENCH_SETS:
        cfg = cfg_for([f"data=unibench_{key}", "data.root=/data/x"])
        assert (cfg.data.kind, cfg.data.set, cfg.eval.max_new_tokens) == ("unibench", key, 64)
        assert cfg.data.features_dir == "/data/x/features" and cfg.paths.emotion_wheel is None
    assert cfg_for([]).eval.max_new_tokens == 16  # the closed-set protocols keep theirs
    assert cfg_for(["data=unibench_meld", "data.root=/d", "eval.max_new_tokens=32"]).eval.max_new_tokens == 32
    ov = cfg_for(["data=synthetic_ov"])
    assert ov.paths.emotion_wheel == f"{ov.paths.synthetic_dir}/wheel" and ov.data.set == "ovmerdplus"
    every = cfg_for(["data=mer_unibench", "data.root=/d"])
    assert every.data.kind == "mer_unibench" and list(every.data.sets) == list(UNIBENCH_SETS)
    assert cfg_for(["extractor=openai", "extractor.base_url=http://h/v1", "extractor.model=m"]).extractor.kind == "openai"


# ---------------------------------------------------------------------------------------------- extraction


def test_rule_extractor_on_hand_written_answers(wheel):
    plain = RuleExtractor()  # the project's label words and synonyms
    assert plain.words("The person seems Joyful, then ANGRY; surely not happy.") == ("joyful", "angry", "happy")
    assert plain.words("Nothing to see here.") == ()
    assert plain.words("happy, happy and happy") == ("happy",)
    wheels = EmotionWheels.load(wheel)
    rule = RuleExtractor(wheels)  # the wheel folder's format.csv forms
    assert rule.words("Anxious and a little tense, maybe upset; no happiness.") == ("anxious", "tense", "upset",
                                                                                    "happiness")
    assert rule.words("joyful or glad") == ("joyful",)  # "glad" is not among this wheel's forms
    phrases = RuleExtractor(EmotionWheels({"at ease": ("calm",), "ease": ("calm",)}, {}, [[("a", "b", "calm")]]))
    assert phrases.words("He is at ease, at ease.") == ("at ease",)  # the longest form first
    assert rule.sentiment(["happy"]) == "positive" and rule.sentiment(["happy", "anxious", "angry"]) == "negative"
    assert rule.sentiment(["happy", "sad"]) == "neutral" and rule.sentiment([]) == "neutral"
    assert rule.sentiment(["surprise", "calm"]) == "neutral"
    assert plain.sentiment(["joyful"]) == "positive" and plain.sentiment(["concerned"]) == "negative"


def test_model_replies_are_read_as_lists_and_sentiments():
    assert read_list("Sure! [Happy, relieved]\nDone.") == ("happy", "relieved")
    assert read_list("[]") == () and read_list("") == ()
    assert read_list("Answer: calm, tense") == ("calm", "tense")
    assert read_sentiment("It is Negative overall.") == "negative" and read_sentiment("unsure") == ""
    assert "We cannot recognize his emotional state." in EXTRACT_PROMPT and "[happy, sad, angry]" in EXTRACT_PROMPT


def test_one_parser_of_word_lists():
    assert openset.parse_openset is parse_openset and extraction.parse_openset is parse_openset
    assert parse_openset("") == ("neutral",) and parse_openset("", empty=()) == ()


# ---------------------------------------------------------------------------------------------- metrics


def test_hit_rate_wiring(merr_folder, checkpoint, wheel, sets, tmp_path, stub_answers):
    cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", "data=unibench_mer2023", f"data.root={sets}/mer2023",
                  f"paths.emotion_wheel={wheel}")
    report = evaluate_unibench(cfg)
    # clip_001 angry <- furious: hit; clip_002 happy <- sad: miss; clip_003 sad <- sorrowful: hit (every wheel);
    # clip_010 neutral maps to no wheel: left out. Hit rate 2/3.
    assert report["hit"] == pytest.approx(2 / 3) and report["score"] == report["hit"]
    assert all(w["scored"] == 3 for w in report["per_wheel"].values())
    rows = predictions(tmp_path / "run" / "predictions.csv")
    assert [rows[n]["result"] for n in BASIC] == ["1.0000", "0.0000", "1.0000", ""]
    assert rows["clip_003"]["labels"] == "[sorrowful, happy]" and rows["clip_001"]["truth"] == "angry"


def test_sentiment_wiring_needs_no_wheel(merr_folder, checkpoint, sets, tmp_path, stub_answers):
    cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", "data=unibench_cmumosi", f"data.root={sets}/cmumosi")
    report = evaluate_unibench(cfg)
    # Binarised truth (clip_007's 0 dropped): 005 T, 006 F, 008 T, 009 F, 011 T; predicted: T, F (a tie is
    # neutral, read as negative), F (calm: neutral), T, T. Accuracy 3/5. Positive: tp 2, fp 1, fn 1 -> F1 2/3
    # (support 3); negative: tp 1, fp 1, fn 1 -> F1 1/2 (support 2). Weighted: (3 * 2/3 + 2 * 1/2) / 5 = 3/5.
    assert report["accuracy"] == pytest.approx(3 / 5) and report["weighted_f1"] == pytest.approx(3 / 5)
    assert report["samples"] == 5 and report["score"] == report["weighted_f1"]
    rows = predictions(tmp_path / "run" / "predictions.csv")
    assert [rows[n]["sentiment"] for n in SCORES] == ["positive", "neutral", "negative", "neutral", "positive",
                                                      "positive"]
    assert [rows[n]["result"] for n in SCORES] == ["1.0000", "1.0000", "", "0.0000", "0.0000", "1.0000"]
    assert rows["clip_006"]["labels"] == "[anxious, happy]" and rows["clip_005"]["truth"] == "2.0"


def test_set_fscore_wiring_at_both_levels(merr_folder, checkpoint, wheel, sets, tmp_path, monkeypatch):
    monkeypatch.setattr(unibench, "generate_answers",
                        lambda core, items, *a, **k: [OPEN_ANSWERS[clip] for clip, _ in items])
    base = [f"data.root={sets}/ovmerdplus", "data=unibench_ovmerdplus", f"paths.emotion_wheel={wheel}"]
    report = evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "l1", *base))
    # clip_001 G={anger} P={anger}: p=r=1; clip_002 G={happy, fear} P={happy, sad}: p=r=1/2; clip_003 ([neutral])
    # left out. P = R = 3/4 in every wheel, F = 3/4.
    assert (report["fscore"], report["precision"], report["recall"]) == pytest.approx((0.75, 0.75, 0.75))
    rows = predictions(tmp_path / "l1" / "predictions.csv")
    assert [rows[n]["result"] for n in OPEN] == ["1.0000", "0.5000", ""]
    level2 = evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "l2", *base, "eval.level=2"))
    wheels = EmotionWheels.load(wheel)
    pred = {n: RuleExtractor(wheels).words(a) for n, a in OPEN_ANSWERS.items()}
    expected = set_scores({n: parse_openset(f"[{', '.join(w)}]") for n, w in OPEN.items()}, pred, wheels, level=2)
    assert level2["level"] == 2 and level2["fscore"] == pytest.approx(expected["fscore"])


def test_no_wheel_is_refused_before_the_model_loads(merr_folder, checkpoint, sets, tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(unibench.InferenceCore, "load", never)
    for data, folder in (("unibench_mer2023", "mer2023"), ("unibench_ovmerdplus", "ovmerdplus")):
        cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", f"data={data}", f"data.root={sets}/{folder}")
        with pytest.raises(UserError, match="paths.emotion_wheel is not set"):
            evaluate_unibench(cfg)
    with pytest.raises(SystemExit) as exit_:
        eval_command.main(["data=mer_unibench", f"data.root={sets}", f"checkpoint={checkpoint}",
                           f"run_dir={tmp_path / 'cli'}", "device=cpu"])
    assert exit_.value.code == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert "MER2023, OV-MERD+ are scored through the emotion wheels" in line and "data.sets=[cmumosi" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "cli").exists()


@pytest.mark.parametrize("override, message", [
    ("data.sets=[mer2023,foo]", "unknown foo"), ("eval.level=3", "eval.level=3: use one of 1, 2"),
    ("extractor=gpt", "extractor=gpt: no such extractor"), ("extractor.temperature=-1", "extractor.temperature=-1"),
])
def test_bad_settings_are_one_line(override, message, sets, capsys):
    with pytest.raises(SystemExit):
        eval_command.main(["data=mer_unibench", f"data.root={sets}", f"checkpoint={sets}", override])
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the table


def test_the_table_lists_missing_sets_and_averages_the_others(merr_folder, checkpoint, wheel, sets, tmp_path,
                                                             stub_answers, caplog):
    cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", "data=mer_unibench", f"data.root={sets}",
                  f"paths.emotion_wheel={wheel}")
    report = evaluate_unibench(cfg)
    present = ["mer2023", "cmumosi", "ovmerdplus"]
    missing = [k for k in UNIBENCH_SETS if k not in present]
    assert report["missing_sets"] == missing and report["sets_scored"] == 3 and report["sets_total"] == 9
    assert "6 of the 9 sets asked for have no label file" in caplog.text and "meld" in caplog.text
    # Each distinct clip (same cache, same subtitle) is answered once across the sets.
    assert sorted(stub_answers) == sorted(set(BASIC) | set(SCORES) | set(OPEN))
    scores = report["scores"]
    assert scores["mer2023"] == pytest.approx(200 / 3) and scores["meld"] is None
    assert report["mean"] == pytest.approx(sum(scores[k] for k in present) / 3)
    assert report["published_mean_over_scored"]["AffectGPT"] == pytest.approx((78.54 + 81.30 + 62.52) / 3)

    run = tmp_path / "run"
    saved = json.loads((run / "unibench.json").read_text())
    assert saved["mean"] == pytest.approx(report["mean"]) and saved["missing_sets"] == missing
    assert saved["sets"]["cmumosi"]["weighted_f1"] == pytest.approx(report["sets"]["cmumosi"]["score"])
    for key in present:
        assert (run / key / "metrics.json").is_file() and (run / key / "predictions.csv").is_file()
    with open(run / "unibench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["set"] for r in table] == [*UNIBENCH_SETS, "mean"]
    assert {r["set"]: r["status"] for r in table if r["set"] in present} == dict.fromkeys(present, "scored")
    assert table[2]["status"] == "missing" and table[2]["score"] == "–"
    assert table[-1]["status"] == "mean over 3 of 9 sets" and table[-1]["AffectGPT"] == "74.77"
    md = (run / "unibench.md").read_text()
    assert f"{report['mean']:.2f} (3 of 9 sets)" in md and "| AffectGPT (published, A+V+T) |" in md
    assert f"{PUBLISHED['Emotion-LLaMA']['mean']:.2f}" in md and "without selection" in md
    assert "Missing (no label file under data.root): mer2024, meld" in md
    printed = unibench.format_report(report)
    assert printed.splitlines()[0].startswith("| | MER2023 | MER2024 | MELD | IEMOCAP |")


# ---------------------------------------------------------------------------------------------- LLM extraction


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_local_extractor_caches_its_replies(merr_folder, checkpoint, sets, tiny_lm, tmp_path, stub_answers,
                                            monkeypatch):
    args = ["data=unibench_cmumosi", f"data.root={sets}/cmumosi", "extractor=local", f"extractor.model={tiny_lm}",
            "extractor.max_new_tokens=4", "extractor.device=cpu"]
    first = evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "run", *args))
    # One extraction prompt per distinct answer, then one sentiment prompt per distinct word list.
    assert first["extractor"]["extractor"] == "local" and first["extractor"]["generated"] >= len(SCORES) + 1
    assert first["extractor"]["cached"] == 0 and first["extractor"]["temperature"] == 0.0
    cache = json.loads((tmp_path / "run" / "extractor_cache.json").read_text())
    prompts = [e["prompt"] for e in cache["entries"].values()]
    assert any("Description: Happy, cheerful.\nAnswer:" in p for p in prompts)
    assert len(cache["entries"]) == first["extractor"]["generated"]

    def no_model(*args, **kwargs):
        raise AssertionError("every reply is cached: no model may load")

    monkeypatch.setattr(extraction, "LocalGenerator", no_model)
    before = (tmp_path / "run" / "predictions.csv").read_text()
    again = evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "run", *args))
    assert again["extractor"]["generated"] == 0 and again["extractor"]["cached"] == first["extractor"]["generated"]
    assert (tmp_path / "run" / "predictions.csv").read_text() == before
    # Another temperature is another cache entry: the model is asked again (and may not load here).
    with pytest.raises(AssertionError, match="no model may load"):
        evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "run", *args, "extractor.temperature=0.7"))


def test_local_extractor_wants_a_model_folder_before_the_model_loads(merr_folder, checkpoint, sets, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(unibench.InferenceCore, "load", lambda *a, **k: pytest.fail("the model loaded"))
    cfg = run_cfg(merr_folder, checkpoint, tmp_path / "run", "data=unibench_cmumosi", f"data.root={sets}/cmumosi",
                  "extractor=local", f"extractor.model={tmp_path}")
    with pytest.raises(UserError, match=r"extractor.model=.* is not a Hugging Face model folder"):
        evaluate_unibench(cfg)


def test_openai_compatible_extractor(merr_folder, checkpoint, wheel, sets, tmp_path, stub_answers, monkeypatch):
    from test_make_instructions import ChatServer

    def script(body):
        user = body["messages"][-1]["content"]
        return 200, ("negative" if user.startswith("A character shows") else "Here: [Happy, tense]")

    server = ChatServer(script)
    try:
        monkeypatch.setenv("UNIBENCH_KEY", "k-9")
        args = ["data=unibench_cmumosi", f"data.root={sets}/cmumosi", "extractor=openai",
                f"extractor.base_url={server.url}", "extractor.model=qwen-extract", "extractor.api_key_env=UNIBENCH_KEY"]
        report = evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "run", *args))
        asked = len(server.bodies)
        assert asked == len(SCORES) + 1  # one extraction per distinct answer, one sentiment per distinct list
        assert all(b["model"] == "qwen-extract" and b["temperature"] == 0.0 and "seed" not in b for b in server.bodies)
        assert server.headers[0]["Authorization"] == "Bearer k-9"
        rows = predictions(tmp_path / "run" / "predictions.csv")
        assert {r["labels"] for r in rows.values()} == {"[happy, tense]"}
        assert {r["sentiment"] for r in rows.values()} == {"negative"}
        # Truth T, F, T, F, T (the 0 dropped), every prediction negative: accuracy 2/5.
        assert report["accuracy"] == pytest.approx(2 / 5) and report["extractor"]["generated"] == asked
        evaluate_unibench(run_cfg(merr_folder, checkpoint, tmp_path / "run", *args))
        assert len(server.bodies) == asked  # all cached
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------- synthetic sets


@pytest.fixture
def fake_synthetic(tmp_path) -> Path:
    """The files of a synthetic set that its MER-UniBench layouts are made from (no videos are needed)."""
    root = tmp_path / "synthetic"
    labels = ["neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt"] * 2
    test = [Sample(f"synth_{i:05d}", label, float(i % 5 - 2), 30) for i, label in enumerate(labels)]
    write_merr_txt(root / "splits" / "test.txt", test)
    write_subtitles(root / "subtitles.csv", {s.name: f"line {i}" for i, s in enumerate(test)})
    (root / "meta.json").write_text("{}\n")
    return root


def test_synthetic_unibench_is_written_on_demand(fake_synthetic, tmp_path):
    with pytest.raises(UserError, match="no synthetic set at .*make_synthetic.py"):
        write_synthetic_unibench(tmp_path / "nothing")
    root = write_synthetic_unibench(fake_synthetic)
    assert root == fake_synthetic / "unibench" and (fake_synthetic / "wheel" / "wheel5.xlsx").is_file()
    wheels = EmotionWheels.load(fake_synthetic / "wheel")
    ov = {s.name: s.labels for s in read_unibench("ovmerdplus", root / "ovmerdplus")}
    assert len(ov) == 18 and ov["synth_00000"] == ("neutral",)  # a neutral clip: OV-MERD+'s empty set
    for words in ov.values():
        if words != ("neutral",):
            assert 2 <= len(words) <= 3 and set(words[1:]) <= set(RELATED_WORDS[words[0]])
            assert all(any(wheels.sector(w, k) for k in range(5)) for w in words)
    assert (root / "ovmerdplus" / "subtitle_eng.csv").read_text().splitlines()[1] == "synth_00000,line 0"
    iemocap = read_unibench("iemocap4", root / "iemocap4")
    assert [s.name for s in iemocap][:2] == ["Ses05_synth_00000", "Ses05_synth_00001"]
    assert read_clip_names(root / "iemocap4", ["Ses05_synth_00001"]) == {"Ses05_synth_00001": "synth_00001"}
    mosi = {s.name: s for s in read_unibench("cmumosi", root / "cmumosi")}
    assert mosi["synth_00002"].label == "positive" and mosi["synth_00001"].label == "negative"
    assert mosi["synth_00005"].valence == 0.0  # surprise: no polarity, dropped by the metric
    assert all(-1 <= s.valence <= 1 for s in read_unibench("sims", root / "sims"))
    assert {s.label for s in read_unibench("meld", root / "meld")} == {
        "neutral", "anger", "joy", "sadness", "surprise", "fear", "disgust"}
    assert os.readlink(root / "mer2023" / "features") == "../../features"
    # Written once: a second call changes nothing; a new test split rewrites it.
    stamp = (root / "ovmerdplus" / "ovlabel.csv").stat().st_mtime_ns
    write_synthetic_unibench(fake_synthetic)
    assert (root / "ovmerdplus" / "ovlabel.csv").stat().st_mtime_ns == stamp
    write_merr_txt(fake_synthetic / "splits" / "test.txt", [Sample("synth_00002", "happy", 1.0, 30)])
    write_synthetic_unibench(fake_synthetic)
    assert [s.name for s in read_unibench("ovmerdplus", root / "ovmerdplus")] == ["synth_00002"]


def test_demo_summary_prints_the_openset_line():
    import demo

    summary = {"test_war": 0.5, "test_uar": 0.4, "ablation_war": {"visual": 0.3}, "dfew": {"war": 0.2, "uar": 0.1},
               "mer2023": {"weighted_f1": 0.6}, "openset_fscore": 0.45, "openset": {"precision": 0.3, "recall": 0.9},
               "reasoning": {"n": 3}, "inference": {"video": "v.mp4", "emotion": "happy"}, "card": "card.png",
               "model": "tiny", "checkpoint": "ckpt", "minutes": 1.0}
    text = demo.format_summary(summary)
    assert "set F-score 0.450  (precision 0.300, recall 0.900)" in text
