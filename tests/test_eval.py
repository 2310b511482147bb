"""Zero-shot evaluation in every native format, its ablations and protocols, and EMER-style reasoning."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import CONF_DIR, train_overrides
from emotion_llama.datasets.common import Sample, write_subtitles
from emotion_llama.datasets.dfew import write_dfew_split, write_dfew_txt
from emotion_llama.datasets.features import FEATURE_DIRS
from emotion_llama.datasets.mer import write_mer2023_csv, write_mer2023_npz, write_mer2024_csv
from emotion_llama.datasets.merr import write_merr_json, write_merr_txt
from emotion_llama.datasets.synthetic import CUE_PHRASES
from emotion_llama.errors import UserError
from emotion_llama.evaluation.evaluate import evaluate
from emotion_llama.evaluation.metrics import SUMMARY_KEYS
from emotion_llama.evaluation.reasoning import (
    JUDGE_PROMPT,
    Truth,
    cue_mentions,
    evaluate_reasoning,
    hf_judge,
    judge,
    parse_judgement,
)
from emotion_llama.labels import DFEW_LABELS, MER_LABELS, MERR_LABELS
from emotion_llama.training.train import train

MISSING = "clip_999"  # listed in every split file, has no features
ALL = [Sample(f"clip_{i:03d}", MERR_LABELS[i % 9]) for i in range(18)] + [Sample(MISSING, "happy")]


def cfg_for(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def fit(root: Path, out: Path, *extra: str) -> Path:
    train(cfg_for("train", train_overrides(root, out, "experiment=tiny_coarse", "~logger.tensorboard", *extra)))
    return out / "runs" / "tiny_coarse" / "model"


@pytest.fixture(scope="module")
def checkpoint(merr_folder, tmp_path_factory) -> Path:
    return fit(merr_folder, tmp_path_factory.mktemp("eval_train"), "trainer.max_epochs=1",
               "trainer.limit_train_batches=2")


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    """Split files of every native format naming the merr_folder clips (plus one without features)."""
    root = tmp_path_factory.mktemp("native")
    dfew = [s for s in ALL if s.label in DFEW_LABELS]  # no worried/contempt/doubt
    for k in (1, 2):
        write_dfew_split(root / "dfew" / "EmoLabel_DataSplit" / "test(single-labeled)" / f"set_{k}.csv", dfew[k - 1::2])
        write_dfew_txt(root / "dfew" / f"test_set_{k}.txt", dfew[k - 1::2], frame_root="/data/DFEW/frames")
    mer = [s for s in ALL if s.label in MER_LABELS]
    write_mer2023_npz(root / "mer2023" / "label-6way.npz", {"test1": mer[::2], "test3": mer})
    write_mer2023_csv(root / "mer2023" / "test-label.csv", mer)
    write_mer2024_csv(root / "mer2024" / "label-disdim.csv", mer)
    write_merr_txt(root / "merr_test.txt", ALL)
    write_merr_txt(root / "merr_small.txt", ALL[:6])
    return root


FORMATS = {
    "dfew_csv": (["data=dfew", "data.root={n}/dfew", "data.folds=[1,2]"], ["fold1", "fold2"]),
    "dfew_txt": (["data=dfew", "data.folds=[1,2]", "data.split_txt='{n}/dfew/test_set_{{fold}}.txt'"],
                 ["fold1", "fold2"]),
    "mer2023_npz": (["data=mer2023", "data.label_file={n}/mer2023/label-6way.npz", "data.corpora=[test1,test3]"],
                    ["test1", "test3"]),
    "mer2023_csv": (["data=mer2023", "data.label_file={n}/mer2023/test-label.csv"], ["test"]),
    "mer2024": (["data=mer2024", "data.label_file={n}/mer2024/label-disdim.csv"], ["test"]),
    "merr": (["data=merr", "data.root={n}", "data.test={n}/merr_test.txt"], ["test"]),
}
# Six clips, odd ones with a subtitle: enough for the ablations.
SMALL = (["data=merr", "data.root={n}", "data.test={n}/merr_small.txt"], ["test"])


def eval_cfg(fmt: str, native: Path, merr_folder: Path, checkpoint: Path, run_dir: Path, *extra: str):
    data = [o.format(n=native) for o in {**FORMATS, "merr_small": SMALL}[fmt][0]]
    return cfg_for("eval", [
        *data, f"paths.output_dir={run_dir.parent}", f"data.features_dir={merr_folder}", "data.videos_dir=null",
        f"data.subtitles={merr_folder}/subtitles.csv", f"checkpoint={checkpoint}", f"run_dir={run_dir}",
        "eval.extract_missing=false", "device=cpu", *extra,
    ])


def read_predictions(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def score_matrix(rows: list[dict], labels: list[str]) -> dict[str, list[float]]:
    return {r["name"]: [float(r[f"score_{lab}"]) for lab in labels] for r in rows if r["name"] != MISSING}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_native_format_scores(fmt, native, merr_folder, checkpoint, tmp_path):
    report = evaluate(eval_cfg(fmt, native, merr_folder, checkpoint, tmp_path / "run"))
    run = tmp_path / "run"
    labels = report["labels"]
    assert list(report["subsets"]) == FORMATS[fmt][1]
    assert json.loads((run / "metrics.json").read_text())["subsets"].keys() == report["subsets"].keys()
    assert report["missing"] == {"count": 1, "names": [MISSING]}
    with Image.open(run / "confusion.png") as png:
        assert png.format == "PNG" and png.size[0] > 100

    rows = read_predictions(run)
    assert [c for c in rows[0] if c.startswith("score_")] == [f"score_{lab}" for lab in labels]
    for subset, rep in report["subsets"].items():
        mine = [r for r in rows if r["subset"] == subset]
        assert rep["n"] + rep["n_missing"] == len(mine)
        # The clip without features is listed, not silently dropped.
        assert [r["prediction"] for r in mine if r["name"] == MISSING] == ["<missing features>"] * rep["n_missing"]
        for r in mine:
            assert r["truth"] in labels
            if r["name"] != MISSING:
                scores = [float(r[f"score_{lab}"]) for lab in labels]
                assert r["prediction"] == labels[int(np.argmax(scores))]
    if fmt.startswith("dfew"):
        assert labels == list(DFEW_LABELS) and report["mean"]["n_folds"] == 2
        folds = [report["subsets"][f]["war"] for f in ("fold1", "fold2")]
        assert report["war"] == pytest.approx(np.mean(folds))
        assert sum(report["subsets"][f]["n_missing"] for f in ("fold1", "fold2")) == 1


def test_generate_protocol_reports_unparseable_and_original(native, merr_folder, checkpoint, tmp_path):
    run = tmp_path / "gen"
    report = evaluate(eval_cfg("mer2024", native, merr_folder, checkpoint, run, "protocol=generate",
                               "eval.max_new_tokens=6"))
    rep = report["subsets"]["test"]
    rows = [r for r in read_predictions(run) if r["name"] != MISSING]
    assert rep["n_unparseable"] == sum(r["prediction"] == "<unparseable>" for r in rows)
    assert all(r["prediction"] in [*MER_LABELS, "<unparseable>"] for r in rows)
    assert set(SUMMARY_KEYS) <= set(rep["original_protocol"]) and "neutral" in rep["original_protocol"]["note"]
    assert all(r["score_happy"] == "" for r in rows)


def test_dropping_audio_zeroes_hubert_and_text_removes_subtitles(native, merr_folder, checkpoint, tmp_path):
    def scores(name: str, *extra: str) -> dict[str, list[float]]:
        report = evaluate(eval_cfg("merr_small", native, merr_folder, checkpoint, tmp_path / name, *extra))
        return score_matrix(read_predictions(tmp_path / name), report["labels"])

    full = scores("full")
    no_audio = scores("no_audio", "eval.drop=[audio]")
    assert any(not np.allclose(full[n], no_audio[n], atol=1e-3) for n in full)
    # Same as a cache whose HuBERT features are zeros: the drop zeroes exactly that modality.
    zeroed = tmp_path / "zeroed"
    shutil.copytree(merr_folder, zeroed, ignore=shutil.ignore_patterns("*.json", "*.txt"))
    for f in (zeroed / FEATURE_DIRS["hubert"]).glob("*.npy"):
        np.save(f, np.zeros_like(np.load(f)))
    by_cache = scores("zeroed_cache", f"eval.features_dir={zeroed}")
    for n in full:
        np.testing.assert_allclose(by_cache[n], no_audio[n], atol=2e-4, err_msg=n)

    no_text = scores("no_text", "eval.drop=[text]")
    for n in full:
        spoke = int(n[-3:]) % 2 == 1  # the fixture gives odd clips a subtitle, even ones none
        assert np.allclose(full[n], no_text[n], atol=2e-4) != spoke, n


# ---------------------------------------------------------------------------------------------- protocols agree

AGREE_LABELS = ["happy", "sad", "angry"]


@pytest.fixture(scope="module")
def separable_folder(tmp_path_factory, tiny_shapes) -> Path:
    """Features that carry the label outright: a fixed random vector per label plus a little noise."""
    root = tmp_path_factory.mktemp("separable")
    rng = np.random.default_rng(1)
    centres = {lab: {m: rng.standard_normal(_shape(tiny_shapes, m)) for m in FEATURE_DIRS} for lab in AGREE_LABELS}
    splits, coarse, subs = {"train": [], "val": [], "test": []}, {}, {}
    for i in range(39):  # 12 test clips: one disagreement still passes the 90% bar
        label, name = AGREE_LABELS[i % 3], f"sep_{i:03d}"
        split = "train" if i < 24 else ("val" if i < 27 else "test")
        splits[split].append(Sample(name, label, n_frames=20))
        coarse[name] = {"caption": f"The person looks {label}."}
        subs[name] = ""
        for m, folder in FEATURE_DIRS.items():
            (root / folder).mkdir(exist_ok=True)
            value = centres[label][m] + 0.1 * rng.standard_normal(centres[label][m].shape)
            np.save(root / folder / f"{name}.npy", value.astype(np.float16 if m == "eva" else np.float32))
    (root / "splits").mkdir()
    for split, rows in splits.items():
        write_merr_txt(root / "splits" / f"{split}.txt", rows)
    write_merr_json(root / "coarse.json", coarse)
    write_merr_json(root / "fine.json", {n: {"smp_reason_caption": c["caption"]} for n, c in coarse.items()})
    write_subtitles(root / "subtitles.csv", subs)
    return root


def _shape(shapes, modality: str) -> tuple[int, ...]:
    dim = shapes.dims[modality]
    return (1 + shapes.eva_patches, dim) if modality == "eva" else (dim,)


def test_score_and_generate_agree_on_a_model_that_knows_the_answer(separable_folder, tmp_path):
    labels = f"data.labels=[{','.join(AGREE_LABELS)}]"
    ckpt = fit(separable_folder, tmp_path / "train", labels, "stage.tasks.describe=0", "trainer.max_epochs=3",
               "optimizer.lr=5e-3", "scheduler.num_warmup_steps=2", "data.batch_size=6")
    preds = {}
    for protocol in ("score", "generate"):
        cfg = cfg_for("eval", [
            "data=merr", labels, f"data.root={separable_folder}", f"data.test={separable_folder}/splits/test.txt",
            f"data.features_dir={separable_folder}", "data.videos_dir=null", f"checkpoint={ckpt}",
            f"data.subtitles={separable_folder}/subtitles.csv",
            f"run_dir={tmp_path / protocol}", f"protocol={protocol}", "eval.extract_missing=false", "device=cpu",
        ])
        report = evaluate(cfg)
        preds[protocol] = {r["name"]: r["prediction"] for r in read_predictions(tmp_path / protocol)}
    assert report["subsets"]["test"]["war"] >= 0.9  # it does know the answer
    agree = np.mean([preds["score"][n] == preds["generate"][n] for n in preds["score"]])
    assert agree >= 0.9, preds


# ---------------------------------------------------------------------------------------------- reasoning


@pytest.mark.parametrize("reply, expected", [
    ("clue: 7; label: 9", (7, 9)),
    ("Clue overlap: 8/10\nLabel overlap: 3/10", (8, 3)),
    ("Sure! clue: 10; label: 1.", (10, 1)),
    ("6; 4", (6, 4)),
    ("clue: 11; label: 5", None),  # out of range is not clamped
    ("clue: 0; label: 5", None),
    ("clue: 5", None),
    ("I cannot judge this.", None),
    ("", None),
])
def test_parse_judgement(reply, expected):
    assert parse_judgement(reply) == expected


def test_judge_aggregates_and_counts_unparseable():
    truth = {n: Truth(n, "happy", "", f"reference {n}") for n in ("a", "b", "c", "d")}
    replies = {"a": "clue: 8; label: 10", "b": "clue: 4; label: 6", "c": "no idea", "d": "clue: 6; label: 2"}
    calls = []

    def stub(prompts: list[str]) -> list[str]:
        calls.append(len(prompts))
        return [replies[p.split("Reference explanation: reference ")[1][0]] for p in prompts]

    summary, rows = judge({n: f"pred {n}" for n in [*truth, "x"]}, truth, stub, batch_size=3)
    assert calls == [3, 1]
    assert summary["n"] == 4 and summary["n_judged"] == 3 and summary["n_without_truth"] == 1
    assert summary["n_unparseable"] == 1 and summary["unparseable"] == ["c"]
    assert summary["clue_overlap"] == pytest.approx(6.0) and summary["label_overlap"] == pytest.approx(6.0)
    assert [r["clue"] for r in rows] == [8, 4, None, 6]
    assert "clue: N; label: M" in JUDGE_PROMPT


def test_cue_mentions_separates_true_from_invented_cues():
    cues = {"face_cues": ["smile", "brows_relaxed", "smile_one_sided"], "voice_cues": ["loud", "high_pitch"]}
    text = ("The face shows Mouth corners pulled up and the one-sided smile; the voice is loud with a high "
            "pitch, and there are narrowed eyelids and wide pitch swings.")
    out = cue_mentions(text, cues, CUE_PHRASES)
    assert sorted(out["named_present"]) == ["high_pitch", "smile", "smile_one_sided"]
    assert sorted(out["named_absent"]) == ["eyes_narrowed", "pitch_swings"]
    assert (out["present"], out["absent"]) == (3, 2)
    assert out["not_named"] == ["brows_relaxed", "loud"]  # "the voice is loud" is not "a loud voice"
    assert cue_mentions("", cues, CUE_PHRASES)["present"] == 0
    # "a low pitch" must not be read inside "a high pitch ... slow" and vice versa.
    assert cue_mentions("a slow, low pitch", {"voice_cues": ["slow"]}, CUE_PHRASES)["named_absent"] == ["low_pitch"]


REASON_CLIPS = ["clip_018", "clip_019", "clip_020"]


@pytest.fixture(scope="module")
def reason_split(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reason") / "test.txt"
    write_merr_txt(path, [Sample(n, MERR_LABELS[int(n[-3:]) % 9]) for n in REASON_CLIPS])
    return path


def reasoning_cfg(merr_folder: Path, split: Path, checkpoint: Path, run_dir: Path, *extra: str):
    return cfg_for("eval_reasoning", [
        "data=synthetic", f"data.root={merr_folder}", f"data.test={split}",
        f"data.fine_json={merr_folder}/fine.json", f"data.subtitles={merr_folder}/subtitles.csv",
        f"data.features_dir={merr_folder}", f"checkpoint={checkpoint}", f"run_dir={run_dir}",
        "reasoning.max_new_tokens=8", "device=cpu", *extra,
    ])


def test_reasons_csv_has_one_row_per_clip_and_is_judged(merr_folder, reason_split, checkpoint, tmp_path):
    prompts = []

    def stub(batch: list[str]) -> list[str]:
        prompts.extend(batch)
        return ["clue: 5; label: 7"] * len(batch)

    report = evaluate_reasoning(reasoning_cfg(merr_folder, reason_split, checkpoint, tmp_path), judge_fn=stub)
    with open(tmp_path / "reasons.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["names", "chi_reasons"] and [r[0] for r in rows[1:]] == REASON_CLIPS
    assert all(len(r) == 2 for r in rows)
    assert report["judge"]["n_judged"] == 3 and report["judge"]["clue_overlap"] == 5.0
    assert any("The face and the voice suggest angry." in p for p in prompts)  # the fine json's reason
    assert json.loads((tmp_path / "reasoning.json").read_text())["judge"]["label_overlap"] == 7.0


def test_emer_ground_truth_without_judge_and_with_a_bad_judge_path(merr_folder, reason_split, checkpoint, tmp_path):
    emer = tmp_path / "emer.csv"
    with open(emer, "w", newline="") as f:
        csv.writer(f).writerows([["names", "emotions", "subtitles", "reasons"],
                                 *[[n, "happy", "I am here", "A wide smile."] for n in [*REASON_CLIPS, MISSING]]])
    report = evaluate_reasoning(reasoning_cfg(merr_folder, reason_split, checkpoint, tmp_path / "plain",
                                              f"reasoning.ground_truth={emer}"))
    assert "judge.model" in report["judge"]["skipped"]
    assert report["n"] == 3 and report["missing"] == {"count": 1, "names": [MISSING]}
    with open(tmp_path / "plain" / "reasons.csv", newline="") as f:
        assert [r["names"] for r in csv.DictReader(f)] == REASON_CLIPS
    with pytest.raises(UserError, match=r"judge\.model"):
        evaluate_reasoning(reasoning_cfg(merr_folder, reason_split, checkpoint, tmp_path / "bad",
                                         f"judge.model={tmp_path}/nope"))


def test_reasoning_outputs_land_together(merr_folder, reason_split, checkpoint, tmp_path):
    """reasons.csv, judgements.csv and reasoning.json are one set: an interrupted run leaves the previous set as
    it was, and a run without a judge leaves no earlier judgements beside its reasons."""
    cfg = reasoning_cfg(merr_folder, reason_split, checkpoint, tmp_path / "run")
    evaluate_reasoning(cfg, judge_fn=lambda batch: ["clue: 5; label: 7"] * len(batch))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert sorted(before) == ["judgements.csv", "reasoning.json", "reasons.csv"]

    def interrupted(batch: list[str]) -> list[str]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_reasoning(cfg, judge_fn=interrupted)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    report = evaluate_reasoning(cfg)
    assert "skipped" in report["judge"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["reasoning.json", "reasons.csv"]


def test_hugging_face_judge_runs_a_local_causal_lm(checkpoint, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint / "tokenizer"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    truth = {n: Truth(n, "happy", "", "A wide smile.") for n in ("a", "b", "c")}
    summary, rows = judge({n: "A smile." for n in truth}, truth, hf_judge(tmp_path / "judge", max_new_tokens=4), 2)
    # A random judge rambles: every reply is read, and none is taken for a score by accident.
    assert len(rows) == 3 and summary["n_judged"] + summary["n_unparseable"] == 3
