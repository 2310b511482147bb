"""Text-only emotion through imagination (WALL-E), through the real evaluation command: the synthetic MELD-layout
set -> tiny text-to-image pipeline -> a tiny checkpoint with and without the picture -> each label mapper ->
metrics.json, predictions.csv and the grid picture; the picture cache on a rerun; bad settings; the demo, which
trains its own model on the set's train split."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from conftest import save_tiny_checkpoint
from emotion_llama.commands import evaluate as eval_cmd
from emotion_llama.imagination import imagine as imagine_mod
from emotion_llama.imagination.tiny import save_tiny_embedder, save_tiny_text_to_image
from emotion_llama.labels import IEMOCAP4_LABELS, IEMOCAP6_LABELS, MELD_LABELS

PER_LABEL = 2
N = PER_LABEL * len(MELD_LABELS)

pytestmark = pytest.mark.usefixtures("restore_logging", "one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained tiny checkpoint, a tiny Stable Diffusion pipeline and a tiny sentence encoder."""
    root = tmp_path_factory.mktemp("walle")
    return SimpleNamespace(ckpt=save_tiny_checkpoint(root / "ckpt"), t2i=save_tiny_text_to_image(root / "t2i"),
                           embedder=save_tiny_embedder(root / "embedder"))


def argv(models, out: Path, *extra: str) -> list[str]:
    return ["data=synthetic_meld", f"paths.output_dir={out}", f"checkpoint={models.ckpt}", f"paths.t2i={models.t2i}",
            f"paths.embedder={models.embedder}", f"data.generate.per_label={PER_LABEL}", "imagine.size=32",
            "imagine.steps=2", "imagine.batch_size=8", "eval.max_new_tokens=6", "device=cpu", *extra]


def run_eval(capsys, args: list[str]) -> dict:
    assert eval_cmd.main(args) == 0
    out = capsys.readouterr().out
    json.loads(out.strip().splitlines()[-1])  # the last line is the metrics JSON
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("run_dir="))
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def files_of(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_both_variants_end_to_end_then_a_rerun_reuses_every_picture(models, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    metrics = run_eval(capsys, argv(models, tmp_path, "variant=both", "mapper=embedding", f"run_dir={run_dir}"))

    assert list(metrics)[0] == "weighted_f1"  # weighted F1 first, as WALL-E reports it
    assert metrics["primary_variant"] == "imagined" and metrics["n"] == N and metrics["labels"] == list(MELD_LABELS)
    assert set(metrics["variants"]) == {"text", "imagined"}
    for rep in metrics["variants"].values():
        assert list(rep)[:4] == ["weighted_f1", "war", "uar", "macro_f1"]
        assert all(0.0 <= rep[k] <= 1.0 for k in ("weighted_f1", "war", "uar", "macro_f1"))
        assert rep["n"] == N and sum(map(sum, rep["confusion"])) + rep["n_invalid"] == N
        assert set(rep["per_class"]) == set(MELD_LABELS)
        assert rep["n_unmapped"] == 0  # the embedding mapper always picks the nearest label
    assert metrics["weighted_f1"] == metrics["variants"]["imagined"]["weighted_f1"]
    assert metrics["embedder"] == str(models.embedder) and "published" not in metrics  # synthetic: no paper figure
    assert metrics["imagination"]["drawn"] == N and metrics["imagination"]["cached"] == 0

    table = rows(run_dir)
    assert len(table) == 2 * N
    assert set(table[0]) >= {"id", "utterance", "label", "variant", "image", "answer", "mapped", "similarity"}
    text, imagined = ([r for r in table if r["variant"] == v] for v in ("text", "imagined"))
    assert [r["id"] for r in text] == [r["id"] for r in imagined] and len({r["id"] for r in text}) == N
    assert all(r["image"] == "" and r["prompt"] == "" for r in text)
    for r in imagined:
        assert Path(r["image"]).is_file() and r["utterance"] in r["prompt"]
        assert r["mapped"] in MELD_LABELS and -1.0 <= float(r["similarity"]) <= 1.0
        assert r["correct"] == str(int(r["mapped"] == r["label"]))
    grid = Image.open(run_dir / "imagined_grid.png")
    assert grid.format == "PNG" and grid.width >= 600 and grid.height >= 200
    assert (run_dir / "confusion_text.png").is_file() and (run_dir / "confusion_imagined.png").is_file()

    # A rerun (another mapper, another run_dir) draws nothing: the pipeline is never loaded, the files and the
    # manifest are untouched.
    image_dir = Path(metrics["imagination"]["cache"])
    before = files_of(image_dir)
    assert len(before) == N + 1  # the pictures and manifest.jsonl

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the text-to-image pipeline was loaded although every picture is cached")

    monkeypatch.setattr(imagine_mod, "load_text_to_image", no_pipeline)
    again = run_eval(capsys, argv(models, tmp_path, "variant=imagined", "mapper=parse", f"run_dir={tmp_path}/again"))
    assert again["imagination"]["drawn"] == 0 and again["imagination"]["cached"] == N
    assert files_of(image_dir) == before
    assert {r["image"] for r in rows(tmp_path / "again")} == {r["image"] for r in imagined}


def test_score_and_parse_mappers_report_their_similarity(models, tmp_path, capsys):
    score = run_eval(capsys, argv(models, tmp_path, "variant=imagined", "mapper=score", f"run_dir={tmp_path}/s"))
    assert set(score["variants"]) == {"imagined"} and score["variants"]["imagined"]["n_unmapped"] == 0
    for r in rows(tmp_path / "s"):
        assert r["mapped"] in MELD_LABELS and 0.0 < float(r["similarity"]) <= 1.0  # the label's probability
        assert r["answer"] == f"Predict emotion: {r['mapped']}"  # the scored answer of the chosen label
    parse = run_eval(capsys, argv(models, tmp_path, "variant=imagined", "mapper=parse", f"run_dir={tmp_path}/p"))
    table = rows(tmp_path / "p")
    assert parse["variants"]["imagined"]["n_unmapped"] == sum(r["mapped"] == "" for r in table)
    for r in table:  # an answer naming no label is unmapped (counted wrong), never guessed
        assert (r["mapped"], r["similarity"]) in {("", "0.0000")} | {(m, "1.0000") for m in MELD_LABELS}


def test_text_variant_draws_and_reports_no_picture(models, tmp_path, capsys):
    args = [a for a in argv(models, tmp_path, "variant=text", "mapper=parse", f"run_dir={tmp_path}/t")
            if not a.startswith("paths.t2i=")]  # no pipeline needed
    metrics = run_eval(capsys, args)
    assert set(metrics["variants"]) == {"text"} and metrics["primary_variant"] == "text"
    assert "imagination" not in metrics and "imagined_minus_text" not in metrics
    assert all(r["image"] == "" and r["variant"] == "text" for r in rows(tmp_path / "t"))
    assert not (tmp_path / "t" / "imagined_grid.png").exists() and not (tmp_path / "imagination").exists()


def test_image_inputs_are_eva_only_and_text_inputs_have_nothing(models, tmp_path):
    from emotion_llama.datasets.dialogue import Utterance
    from emotion_llama.imagination.imagine import Imaginer
    from emotion_llama.imagination.pictures import ImageInputs, text_inputs
    from emotion_llama.inference.core import InferenceCore
    from emotion_llama.model.fusion import PRESENT

    utterance = Utterance("dia0_utt0", "I am so happy!", "Sam", "joy", "dia0", 0)
    paths = Imaginer(models.t2i, tmp_path, size=32, steps=2, device="cpu").imagine([utterance]).paths
    core = InferenceCore.load(models.ckpt, device="cpu")
    feats = ImageInputs(core)([paths["dia0_utt0"]] * 2)
    assert set(feats) == {"eva", PRESENT}
    assert feats[PRESENT].tolist() == [[True, False, False, False]] * 2
    assert feats["eva"].shape[0] == 2 and torch.equal(feats["eva"][0], feats["eva"][1])
    assert text_inputs(3)[PRESENT].tolist() == [[False] * 4] * 3


def _iemocap(root: Path) -> Path:
    dialog = root / "Session1" / "dialog"
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions").mkdir(parents=True)
    turns = [("F000", "neu", "Excuse me."), ("M000", "exc", "We won!"), ("F001", "fru", "Not again."),
             ("M001", "sad", "I lost it."), ("F002", "ang", "This is ridiculous!"), ("M002", "hap", "Great!")]
    evaluation, transcript = [], []
    for i, (turn, code, text) in enumerate(turns):
        evaluation.append(f"[{i}.0 - {i}.5]\tSes01F_impro01_{turn}\t{code}\t[2.5, 2.5, 2.5]")
        transcript.append(f"Ses01F_impro01_{turn} [{i:07.4f}-{i + 0.5:07.4f}]: {text}")
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_text("\n".join(evaluation) + "\n")
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_text("\n".join(transcript) + "\n")
    return root


@pytest.mark.parametrize(("classes", "labels", "n"), [(4, IEMOCAP4_LABELS, 5), (6, IEMOCAP6_LABELS, 6)])
def test_iemocap_four_and_six_class_setups(models, tmp_path, capsys, classes, labels, n):
    root = _iemocap(tmp_path / "iemocap")
    args = ["data=iemocap", f"data.root={root}", "data.sessions=[1]",
            f"data.classes={classes}", "variant=text", "mapper=score", f"checkpoint={models.ckpt}", "device=cpu",
            f"paths.output_dir={tmp_path}"]
    metrics = run_eval(capsys, [*args, f"run_dir={tmp_path}/run"])
    assert metrics["labels"] == list(labels) and metrics["n"] == n and metrics["data"] == f"iemocap{classes}"
    assert metrics["published"]["imagined_weighted_f1"] == 25.23  # real IEMOCAP: the paper's figure beside ours


def refused(capsys, args: list[str], *expected: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        eval_cmd.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_bad_settings_are_one_line_naming_the_key(models, tmp_path, capsys):
    base = argv(models, tmp_path, f"run_dir={tmp_path}/run")
    no_t2i = [a for a in base if not a.startswith("paths.t2i=")]
    not_a_pipeline = tmp_path / "empty"
    not_a_pipeline.mkdir()
    refused(capsys, [*base, "variant=foo"], "variant=foo", "text, imagined, both")
    refused(capsys, [*base, "mapper=nearest"], "mapper=nearest", "embedding, parse, score")
    refused(capsys, [*no_t2i, "variant=imagined"], "paths.t2i is not set", "variant=text")
    refused(capsys, [*no_t2i, "variant=both", f"paths.t2i={tmp_path}/nowhere"], "paths.t2i=", "not found")
    refused(capsys, [*no_t2i, f"paths.t2i={not_a_pipeline}"], "paths.t2i=", "model_index.json")
    refused(capsys, [*base, "imagine.prompt_template=a picture of someone"], "imagine.prompt_template", "{utterance}")
    refused(capsys, [*base, "imagine.prompt_template=at {place}: {utterance}"], "imagine.prompt_template", "{place}")
    refused(capsys, [*base, "imagine.size=36"], "imagine.size=36", "multiple of 8")
    refused(capsys, [*base, "imagine.steps=0"], "imagine.steps=0")
    refused(capsys, [*base, "mapper=embedding", f"paths.embedder={tmp_path}/nowhere"], "paths.embedder=")
    refused(capsys, [*base, "data.split=validation"], "data.split=validation", "train, dev, test")
    refused(capsys, [*base, f"checkpoint={not_a_pipeline}"], "is not a checkpoint folder")
    refused(capsys, ["data=iemocap", f"checkpoint={models.ckpt}"], "data.root")
    refused(capsys, ["data=iemocap", f"data.root={tmp_path}", "data.classes=5", f"checkpoint={models.ckpt}"],
            "data.classes=5")
    refused(capsys, ["data=iemocap", f"data.root={tmp_path}", "data.sessions=[0,x]", "variant=text",
             f"checkpoint={models.ckpt}"],
            "data.sessions=[0,x]", "1..5")
    assert not (tmp_path / "run").exists() and not (tmp_path / "imagination").exists()  # refused before anything


def test_an_instructblip_backbone_answers_through_the_same_path(tmp_path):
    """Backbone-agnostic: a model that reads pixels gets the picture's pixel values, EVA column present."""
    from emotion_llama.datasets.dialogue import Utterance
    from emotion_llama.evaluation.imagined import answer_variant
    from emotion_llama.imagination.imagine import Imaginer
    from emotion_llama.imagination.mapper import ParseMapper, ScoreMapper
    from emotion_llama.imagination.pictures import ImageInputs
    from emotion_llama.inference.core import InferenceCore
    from emotion_llama.model.fusion import PRESENT
    from emotion_llama.model.instructblip import build_tiny_instructblip
    from emotion_llama.model.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=512)
    core = InferenceCore(build_tiny_instructblip(tokenizer, seed=0), tokenizer, device="cpu")
    t2i = save_tiny_text_to_image(tmp_path / "t2i")
    utterances = [Utterance(f"dia0_utt{i}", text, "Sam", label, "dia0", i)
                  for i, (text, label) in enumerate([("I am so happy!", "joy"), ("Leave me alone!", "anger")])]
    images = Imaginer(t2i, tmp_path / "cache", size=32, steps=2, device="cpu").imagine(utterances).paths
    feats = ImageInputs(core)([images[u.id] for u in utterances])
    assert "eva" not in feats and feats[PRESENT].tolist() == [[True, False, False, False]] * 2
    labels = list(MELD_LABELS)
    scored = answer_variant(core, utterances, "imagined", "score", ScoreMapper(labels), labels, images)
    assert [a.id for a in scored] == ["dia0_utt0", "dia0_utt1"] and all(a.mapped in labels for a in scored)
    generated = answer_variant(core, utterances, "text", "parse", ParseMapper(labels), labels, max_new_tokens=4)
    assert all(a.image == "" and isinstance(a.answer, str) for a in generated)


@pytest.mark.slow
def test_demo_text_runs_every_mapper_and_writes_its_summary(models, tmp_path, capsys):
    import demo_text

    from emotion_llama import cli

    args = [f"paths.output_dir={tmp_path}", f"checkpoint={models.ckpt}", f"t2i={models.t2i}",
            f"embedder={models.embedder}", "per_label=1", "threads=null"]
    assert cli.run("demo_text", demo_text.main, args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo_text" / "summary.json").read_text())
    assert set(summary["mappers"]) == {"embedding", "parse", "score"} and summary["n"] == 7
    pictures = [summary["mappers"][m]["pictures"] for m in ("embedding", "parse", "score")]
    assert pictures == [{"drawn": 7, "cached": 0}, {"drawn": 0, "cached": 7}, {"drawn": 0, "cached": 7}]
    assert "published (WALL-E, weighted F1 %): MELD 46.74" in out
    assert json.loads(out.strip().splitlines()[-1])["score"].keys() == {"text", "imagined"}


def test_demo_text_trains_its_model_on_the_train_split_then_reuses_it(models, tmp_path, capsys):
    import demo_text

    from emotion_llama import cli

    args = [f"paths.output_dir={tmp_path}", f"t2i={models.t2i}", f"embedder={models.embedder}", "per_label=1",
            "train_per_label=3", 'train_overrides=["trainer.max_epochs=1"]', "mappers=[score]", "variant=text"]
    assert cli.run("demo_text", demo_text.main, args) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo_text" / "summary.json").read_text())
    training = summary["training"]
    assert summary["checkpoint"] == str(tmp_path / "demo_text" / "text_model" / "model")
    assert training["reused"] is False and training["seconds"] > 0 and training["train_utterances"] == 21
    assert training["labels"] == ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
    assert training["pictures"] is False and 0.0 <= training["val_war"] <= 1.0
    assert len(Path(tmp_path, "synthetic_meld", "train_sent_emo.csv").read_text().splitlines()) == 22
    assert "model: tiny_text_coarse on the synthetic train split (21 utterances, text only), trained in" in out
    assert set(summary["mappers"]["score"]["variants"]) == {"text"}

    assert cli.run("demo_text", demo_text.main, args) == 0  # the second run answers with the same model
    capsys.readouterr()
    again = json.loads((tmp_path / "demo_text" / "summary.json").read_text())
    assert again["training"]["reused"] is True and again["checkpoint"] == summary["checkpoint"]
    assert again["mappers"]["score"]["variants"] == summary["mappers"]["score"]["variants"]
